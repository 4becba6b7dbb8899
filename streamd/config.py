"""One typed configuration object for every part of streamd.

Values come, lowest precedence first, from: the dataclass defaults below, a YAML file
(`config.yaml` in the working directory, or the path in ``STREAMD_CONFIG``), environment
variables ``STREAMD_<SECTION>__<KEY>`` (for example ``STREAMD_KAFKA__BOOTSTRAP_SERVERS``), and
explicit overrides such as CLI flags (``{"kafka.bootstrap_servers": "..."}``).

Every value is checked when it is loaded: a wrong type, an unknown key or a value outside its
allowed set fails at start with a :class:`ConfigError` that names the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ENV_PREFIX = "STREAMD_"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


def _choice(*allowed: Any, default: Any) -> Any:
    return field(default=default, metadata={"choices": allowed})


def _bounded(default: Any, lo: float | None = None, hi: float | None = None) -> Any:
    return field(default=default, metadata={"min": lo, "max": hi})


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    audio_topic: str = "streamd.audio"
    events_topic: str = "streamd.recognitions"
    deadletter_topic: str = "streamd.deadletter"
    group_id: str = "streamd"
    audio_partitions: int = _bounded(8, 1, 10_000)
    security_protocol: str = _choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL", default="PLAINTEXT")
    sasl_mechanism: str = _choice("", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", default="")
    sasl_username: str = ""
    sasl_password: str = field(default="", metadata={"secret": True})
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""


@dataclass(frozen=True)
class RedisConfig:
    url: str = "redis://127.0.0.1:6379/0"
    username: str = ""
    password: str = field(default="", metadata={"secret": True})
    ssl_ca_certs: str = ""
    socket_timeout_s: float = _bounded(5.0, 0.1, 600)


@dataclass(frozen=True)
class FrontendConfig:
    sample_rate: int = _choice(12000, default=12000)
    n_fft: int = _choice(256, 512, 1024, default=512)
    hop_length: int = _choice(128, 256, 512, default=256)
    n_mels: int = _bounded(96, 16, 256)
    window_frames: int = _bounded(1366, 64, 4096)
    pad_frames: int = _bounded(0, 0, 1024)
    max_gap_fill_s: float = _bounded(2.0, 0.0, 60.0)
    max_ts_jitter_s: float = _bounded(0.05, 0.0, 10.0)
    resample_quality: str = _choice("QQ", "LQ", "MQ", "HQ", "VHQ", default="HQ")


@dataclass(frozen=True)
class ModelConfig:
    weights: str = "models/streamd-hash128.safetensors"
    device: str = _choice("auto", "cpu", "cuda", default="auto")
    bits: int = _choice(16, 32, 64, 128, default=128)
    hop_frames: int = _bounded(48, 1, 4096)
    max_batch: int = _bounded(256, 1, 1_000_000)  # streams per encoder call; 4096 on a GPU (deploy/k8s/overlays/gpu)
    threads: int = _bounded(0, 0, 256)
    batch_split: int = _bounded(0, 0, 256)  # 0: one part per core in `streamd run` on CPU with threads 0, else 1


@dataclass(frozen=True)
class StoreConfig:
    catalog: str = "default"
    search: str = _choice("exact", "mih", default="exact")
    top_k: int = _bounded(10, 1, 1000)
    mih_radius: int = _bounded(8, 0, 64)
    mih_substrings: int = _bounded(0, 0, 64)  # 0: the cheapest for the catalog size and mih_radius
    device: str = _choice("auto", "cpu", "cuda", default="auto")
    search_threads: int = _bounded(0, 0, 256)  # 0: all cores


@dataclass(frozen=True)
class DaemonConfig:
    http_host: str = "127.0.0.1"
    http_port: int = _bounded(9108, 0, 65535)
    min_confidence: float = _bounded(0.5, 0.0, 1.0)
    max_lag_s: float = _bounded(30.0, 1.0, 3600.0)
    log_format: str = _choice("json", "text", default="json")
    log_level: str = _choice("DEBUG", "INFO", "WARNING", "ERROR", default="INFO")
    # Decision logic (streamd/decision.py, docs/decision.md).
    min_hits: int = _bounded(10, 1, 1000)  # bench/decision_sweep.py, docs/decision.md
    min_evidence: float = _bounded(1.1, 0.0, 1000.0)
    max_distance_ratio: float = _bounded(0.375, 0.0, 0.5)
    align_tol_s: float = _bounded(1.5, 0.0, 60.0)
    speed_tol: float = _bounded(0.03, 0.0, 0.5)
    candidate_max_misses: int = _bounded(1, 0, 100)
    end_after_misses: int = _bounded(16, 1, 1000)
    from_start_max_s: float = _bounded(8.0, 0.0, 3600.0)
    start_context_s: float = _bounded(4.0, 0.0, 600.0)
    max_overlap_s: float = _bounded(1.0, 0.0, 600.0)
    end_bias_s: float = _bounded(1.5, -60.0, 60.0)
    max_candidates: int = _bounded(32, 1, 10_000)
    rival_window_s: float = _bounded(1.5, 0.0, 60.0)
    verify_max_distance_ratio: float = _bounded(0.3125, 0.0, 0.5)  # 0: no verification
    verify_history_hops: int = _bounded(40, 0, 1000)
    verify_gap_hops: int = _bounded(2, 0, 100)
    boundary_distance_ratio: float = _bounded(0.43, 0.0, 0.5)  # 0: strict walks only (docs/decision.md)
    boundary_max_drop_ratio: float = _bounded(0.3125, 0.0, 10.0)
    boundary_start_context_s: float = _bounded(3.5, 0.0, 60.0)
    boundary_end_bias_s: float = _bounded(-1.0, -60.0, 60.0)
    peak_hits: int = _bounded(2, 0, 1000)  # 0: no peak-confirmed start (streamd/peaks.py, docs/decision.md)
    peak_min_agreement: float = _bounded(0.4, 0.0, 1.0)
    peak_veto_below: float = _bounded(0.2, 0.0, 1.0)  # peaks this far from agreeing hold back a min_hits start
    # Events, ops and metrics (streamd/events.py, streamd/httpserver.py, streamd/metrics.py).
    event_id_quantum_s: float = _bounded(10.0, 0.001, 3600.0)
    health_stall_s: float = _bounded(30.0, 1.0, 3600.0)
    metrics_top_streams: int = _bounded(0, 0, 1000)
    # Daemon loop, delivery and load shedding (streamd/daemon/, docs/daemon.md).
    state_topic: str = "streamd.state"
    commit_interval_s: float = _bounded(10.0, 0.1, 600.0)
    max_poll_records: int = _bounded(2000, 1, 1_000_000)
    warmup_margin_s: float = _bounded(2.0, 0.0, 600.0)
    warmup_max_records: int = _bounded(200_000, 0, 100_000_000)
    session_timeout_s: float = _bounded(10.0, 6.0, 1800.0)  # a killed daemon's partitions move after this
    shed_lag_s: float = _bounded(5.0, 0.5, 3600.0)
    # glibc malloc (streamd/daemon/allocator.py): flat RSS without page-fault churn; 0 = glibc's default.
    malloc_mmap_threshold_kb: int = _bounded(65_536, 0, 1_048_576)
    malloc_trim_threshold_kb: int = _bounded(524_288, 0, 4_194_304)
    malloc_arena_max: int = _bounded(1, 0, 1024)  # 1: librdkafka's fetch buffers share the main arena (session 17)
    gc_freeze: bool = True  # start-up objects leave the garbage collector's walks (shorter pauses)
    gc_young_threshold: int = _bounded(10_000, 0, 10_000_000)  # allocations between young collections; 0: Python's 700


@dataclass(frozen=True)
class ServicesConfig:
    state_dir: str = ".local"
    kafka_port: int = _bounded(9092, 1, 65535)
    kafka_controller_port: int = _bounded(9093, 1, 65535)
    kafka_version: str = "4.1.1"
    kafka_heap_mb: int = _bounded(512, 128, 16384)
    kafka_retention_mb: int = _bounded(512, 16, 1_048_576)  # per partition; also log.retention.hours=24
    redis_port: int = _bounded(6379, 1, 65535)
    start_timeout_s: float = _bounded(90.0, 1.0, 900.0)


@dataclass(frozen=True)
class Config:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    services: ServicesConfig = field(default_factory=ServicesConfig)

    def redacted(self) -> dict[str, dict[str, Any]]:
        """The configuration as plain dicts, with secrets replaced, safe to log: secret fields and
        the password part of any URL (``rediss://user:password@host``)."""
        from streamd.logs import Redactor

        mask_url_password = Redactor()
        out: dict[str, dict[str, Any]] = {}
        for section in dataclasses.fields(self):
            values = {}
            for f in dataclasses.fields(_section_type(section.name)):
                value = getattr(getattr(self, section.name), f.name)
                if f.metadata.get("secret") and value:
                    value = "***"
                elif isinstance(value, str) and "://" in value:
                    value = mask_url_password(value)
                values[f.name] = value
            out[section.name] = values
        return out


def _section_type(name: str) -> type:
    return typing.get_type_hints(Config)[name]


def _coerce(key: str, f: dataclasses.Field, raw: Any, hint: Any) -> Any:
    if isinstance(hint, types.UnionType):
        hint = next(t for t in typing.get_args(hint) if t is not type(None))
    try:
        if hint is bool:
            if isinstance(raw, str):
                lowered = raw.strip().lower()
                if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(raw)
                value: Any = lowered in ("1", "true", "yes", "on")
            else:
                value = bool(raw)
        elif hint is int:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError(raw)
            if isinstance(raw, bool):
                raise ValueError(raw)
            value = int(raw)
        elif hint is float:
            if isinstance(raw, bool):
                raise ValueError(raw)
            value = float(raw)
            if not math.isfinite(value):  # NaN would slip through every range check
                raise ValueError(raw)
        else:
            if isinstance(raw, (dict, list)):
                raise ValueError(raw)
            value = "" if raw is None else str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {raw!r} is not a valid {hint.__name__}") from None
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{key}: {value!r} is not allowed; allowed values: {allowed}")
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise ConfigError(f"{key}: {value!r} is out of range; allowed: {lo} to {hi}")
    return value


def _env_overrides(environ: typing.Mapping[str, str]) -> dict[str, str]:
    out = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name or name == "STREAMD_CONFIG":
            continue
        section, _, key = name[len(ENV_PREFIX):].partition("__")
        out[f"{section.lower()}.{key.lower()}"] = value
    return out


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML parse error on one line: what is wrong and where (PyYAML's own message spans lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def default_config_path() -> Path | None:
    env = os.environ.get("STREAMD_CONFIG")
    if env:
        return Path(env)
    here = Path("config.yaml")
    return here if here.exists() else None


def load_config(
    path: str | Path | None = None,
    overrides: typing.Mapping[str, Any] | None = None,
    environ: typing.Mapping[str, str] | None = None,
) -> Config:
    """Build the :class:`Config` from defaults, a YAML file, env vars and overrides.

    ``overrides`` maps dotted keys (``"model.device"``) to values; ``None`` values are ignored
    so that unset CLI flags can be passed through as they are.
    """
    layered: dict[str, Any] = {}
    path = Path(path) if path is not None else default_config_path()
    if path is not None:
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {yaml_problem(exc)}") from None
        if not isinstance(document, dict):
            raise ConfigError(f"config file {path}: top level must be a mapping of sections")
        for section, values in document.items():
            if values is None:
                continue
            if not isinstance(values, dict):
                raise ConfigError(f"{section}: must be a mapping of keys, got {type(values).__name__}")
            for key, value in values.items():
                layered[f"{section}.{key}"] = value
    layered.update(_env_overrides(os.environ if environ is None else environ))
    layered.update({k: v for k, v in (overrides or {}).items() if v is not None})

    hints = typing.get_type_hints(Config)
    sections: dict[str, dict[str, Any]] = {name: {} for name in hints}
    for dotted, raw in layered.items():
        section, _, key = dotted.partition(".")
        if section not in hints:
            raise ConfigError(f"{dotted}: unknown section {section!r}; sections: {', '.join(hints)}")
        section_type = hints[section]
        fields = {f.name: f for f in dataclasses.fields(section_type)}
        if key not in fields:
            raise ConfigError(f"{dotted}: unknown key; keys of {section}: {', '.join(fields)}")
        field_hints = typing.get_type_hints(section_type)
        sections[section][key] = _coerce(dotted, fields[key], raw, field_hints[key])
    return Config(**{name: hints[name](**values) for name, values in sections.items()})
