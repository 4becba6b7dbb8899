"""The typed config: file, env and override layers, their precedence, and the errors for bad input."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from streamd.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./config.yaml here
    monkeypatch.delenv("STREAMD_CONFIG", raising=False)
    config = load_config(environ={})
    assert config == Config()
    assert config.kafka.bootstrap_servers == "127.0.0.1:9092" and config.model.bits == 128


def test_repository_config_yaml_loads():
    config = load_config(REPO / "config.yaml", environ={})
    assert config.kafka.audio_topic and config.frontend.sample_rate == 12000


def test_file_values_are_typed(tmp_path):
    path = write(
        tmp_path, "kafka:\n  audio_partitions: '16'\nstore:\n  search: mih\ndaemon:\n  max_lag_s: 5\n"
    )
    config = load_config(path, environ={})
    assert config.kafka.audio_partitions == 16
    assert config.store.search == "mih"
    assert config.daemon.max_lag_s == 5.0 and isinstance(config.daemon.max_lag_s, float)


def test_precedence_defaults_then_file_then_env_then_overrides(tmp_path):
    path = write(tmp_path, "kafka:\n  group_id: from-file\n  audio_topic: file-topic\nmodel:\n  bits: 32\n")
    environ = {"STREAMD_KAFKA__GROUP_ID": "from-env", "STREAMD_MODEL__BITS": "128"}
    config = load_config(path, {"model.bits": 16, "kafka.events_topic": None}, environ=environ)
    assert config.kafka.audio_topic == "file-topic"  # file beats default
    assert config.kafka.group_id == "from-env"  # env beats file
    assert config.model.bits == 16  # override beats env
    assert config.kafka.events_topic == "streamd.recognitions"  # None override = unset flag


def test_streamd_config_env_names_the_file(tmp_path, monkeypatch):
    path = write(tmp_path, "store:\n  catalog: elsewhere\n")
    monkeypatch.setenv("STREAMD_CONFIG", str(path))
    assert load_config().store.catalog == "elsewhere"
    monkeypatch.setenv("STREAMD_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="missing.yaml does not exist"):
        load_config()


def test_env_vars_without_section_separator_are_ignored():
    config = load_config(environ={"STREAMD_CORPUS": "/data", "STREAMD_CONFIG": "x", "OTHER__KEY": "1"})
    assert config == load_config(environ={})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model.device", "tpu", r"model.device: 'tpu' is not allowed; allowed values: 'auto', 'cpu', 'cuda'"),
        ("model.bits", "48", r"model.bits: 48 is not allowed; allowed values: 16, 32, 64, 128"),
        ("model.bits", "sixty-four", r"model.bits: 'sixty-four' is not a valid int"),
        ("kafka.audio_partitions", "0", r"kafka.audio_partitions: 0 is out of range; allowed: 1 to 10000"),
        ("kafka.audio_partitions", "2.5", r"not a valid int"),
        ("kafka.audio_partitions", True, r"not a valid int"),
        ("daemon.min_confidence", "1.5", r"daemon.min_confidence: 1.5 is out of range; allowed: 0.0 to 1.0"),
        ("daemon.min_confidence", "nan", r"daemon.min_confidence: 'nan' is not a valid float"),
        ("daemon.http_port", "inf", r"not a valid int"),
        ("kafka.security_protocol", "TLS", r"allowed values: 'PLAINTEXT', 'SSL'"),
        ("kafka.group_id", ["a", "b"], r"kafka.group_id: \['a', 'b'\] is not a valid str"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides={key: value}, environ={})


def test_bad_value_from_env_names_the_key():
    with pytest.raises(ConfigError, match="redis.socket_timeout_s: 'soon' is not a valid float"):
        load_config(environ={"STREAMD_REDIS__SOCKET_TIMEOUT_S": "soon"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kafka:\n  bootstrap: x\n", r"kafka.bootstrap: unknown key; keys of kafka: bootstrap_servers, "),
        ("kafak:\n  group_id: x\n", r"kafak.group_id: unknown section 'kafak'; sections: kafka, redis"),
        ("kafka: [1, 2]\n", r"kafka: must be a mapping of keys, got list"),
        ("- kafka\n", r"top level must be a mapping of sections"),
        ("kafka:\n  group_id: [unclosed\n", r"is not valid YAML"),
        ("kafka:\n\tgroup_id: x\n", r"is not valid YAML"),
    ],
)
def test_bad_files_fail_with_a_message(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), environ={})


def test_unknown_env_key_fails():
    with pytest.raises(ConfigError, match="model.layers: unknown key"):
        load_config(environ={"STREAMD_MODEL__LAYERS": "3"})


def test_empty_file_and_empty_sections_mean_defaults(tmp_path):
    assert load_config(write(tmp_path, ""), environ={}) == Config()
    assert load_config(write(tmp_path, "kafka:\nredis:\n"), environ={}) == Config()


def test_config_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_config(environ={}).kafka.group_id = "x"


def test_redacted_hides_secrets_only_when_set():
    config = load_config(
        overrides={"kafka.sasl_password": "hunter2", "kafka.sasl_username": "me"}, environ={}
    )
    redacted = config.redacted()
    assert redacted["kafka"]["sasl_password"] == "***"
    assert redacted["kafka"]["sasl_username"] == "me"
    assert redacted["redis"]["password"] == ""
    assert set(redacted) == {f.name for f in dataclasses.fields(Config)}
