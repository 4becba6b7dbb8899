"""Bad input through every CLI command: a clear one-line message, a non-zero exit, no traceback.

Runs the installed console script (``.venv/bin/streamd``) as a user would, in an empty working
directory (so the checkout's config.yaml does not apply). Bad configuration comes three ways: a
``STREAMD_<SECTION>__<KEY>`` variable with a bad value, a YAML file with a syntax error, and a
file with an unknown key (the last two through ``STREAMD_CONFIG``, which every command honours,
and ``-c``). Bad input files are corrupt audio (random bytes, a WAV cut inside its header), a
pickle where weights belong, and broken JSON.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest

STREAMD = Path(sys.executable).with_name("streamd")
REPO = Path(__file__).resolve().parents[1]
BAD_VALUE = {"STREAMD_MODEL__BITS": "63"}
CLOSED_PORT = "127.0.0.1:1"  # nothing listens on port 1


def streamd(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMD_")}
    environ.update(env or {})
    return subprocess.run([str(STREAMD), *args], cwd=cwd, env=environ, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip


def assert_clean_failure(result: subprocess.CompletedProcess, *expected: str) -> str:
    """Non-zero exit, no traceback anywhere, and an ``error:`` line that mentions ``expected``."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output and 'File "' not in output, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad-input")
    wav = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + 48000, b"WAVE", b"fmt ", 16, 1, 1, 12000, 24000, 2, 16,
                      b"data", 48000) + bytes(48000)  # fmt: skip
    made = {
        "noise.wav": os.urandom(4096),
        "noise.mp3": os.urandom(4096),
        "cut.wav": wav[:30],  # cut inside the fmt chunk
        "empty.flac": b"",
        "weights.pt": pickle.dumps({"net.weight": [1.0, 2.0]}),
        "garbage.safetensors": os.urandom(256),
        "syntax.yaml": "kafka:\n  bootstrap_servers: [unclosed\n",
        "unknown.yaml": "kafka:\n  bootstrap_server: 127.0.0.1:9092\n",
        "truth.json": "{not json",
        "events.jsonl": '{"type": "started"\nnot json at all\n',
        "train-syntax.yaml": "steps: [\n",
        "train-unknown.yaml": "stepz: 10\n",
    }
    paths = {}
    for name, content in made.items():
        path = root / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        paths[name] = path
    (root / "music").mkdir()
    (root / "music" / "a.wav").write_bytes(os.urandom(2048))
    paths["music"] = root / "music"
    paths["cwd"] = root
    return paths


# --- bad configuration, through every command that reads the streamd config ----------------------

CONFIG_COMMANDS = {
    "run": ["run"],
    "ingest": ["ingest", "noise.wav", "--stream", "s"],
    "index": ["index", "music", "--catalog", "cli-errors"],
    "recognize": ["recognize", "noise.wav"],
    "eval": ["eval", "--queries", "1"],
    "demo": ["demo", "--minutes", "0.5"],
    "services-up": ["services", "up"],
    "services-status": ["services", "status"],
    "catalog-list": ["catalog", "list"],
    "catalog-show": ["catalog", "show", "x"],
    "catalog-delete": ["catalog", "delete", "x", "--yes"],
}
CONFIG_FAULTS = {
    "env-value": (BAD_VALUE, "model.bits: 63"),
    "yaml-syntax": ({"STREAMD_CONFIG": "syntax.yaml"}, "not valid YAML"),
    "unknown-key": ({"STREAMD_CONFIG": "unknown.yaml"}, "kafka.bootstrap_server: unknown key"),
}


def _config_cases() -> list:
    """Every command with every fault; in the default suite each command gets one fault (in turn),
    the full matrix runs with -m slow."""
    faults = sorted(CONFIG_FAULTS)
    return [pytest.param(command, fault, id=f"{fault}-{command}",
                         marks=() if fault == faults[i % len(faults)] else pytest.mark.slow)
            for i, command in enumerate(sorted(CONFIG_COMMANDS)) for fault in faults]  # fmt: skip


@pytest.mark.parametrize("command,fault", _config_cases())
def test_bad_config_stops_every_command_with_one_line(files, command, fault):
    env, expected = CONFIG_FAULTS[fault]
    env = {k: str(files["cwd"] / v) if k == "STREAMD_CONFIG" else v for k, v in env.items()}
    assert_clean_failure(streamd(*CONFIG_COMMANDS[command], cwd=files["cwd"], env=env), expected)


@pytest.mark.parametrize("config_file,expected", [("syntax.yaml", "not valid YAML"), ("unknown.yaml", "unknown key"),
                                                  ("missing.yaml", "does not exist")])  # fmt: skip
def test_config_option_with_a_bad_file(files, config_file, expected):
    assert_clean_failure(streamd("-c", config_file, "catalog", "list", cwd=files["cwd"]), expected)


@pytest.mark.parametrize("config_file,expected", [("train-syntax.yaml", "YAML"), ("train-unknown.yaml", "stepz"),
                                                  ("missing.yaml", "missing.yaml")])  # fmt: skip
def test_train_with_a_bad_training_config(files, config_file, expected):
    assert_clean_failure(streamd("train", "--config-file", config_file, "--steps", "1", cwd=files["cwd"]), expected)


# --- unreachable servers (a wrong address in the config) ----------------------------------------


@pytest.mark.parametrize("args", [["catalog", "list"], ["catalog", "show", "x"], ["index", "music", "--catalog", "x"]])
def test_unreachable_redis_is_one_line(files, args):
    env = {"STREAMD_REDIS__URL": f"redis://{CLOSED_PORT}/0", "STREAMD_REDIS__SOCKET_TIMEOUT_S": "1",
           "STREAMD_MODEL__WEIGHTS": str(REPO / "models" / "streamd-hash128.safetensors")}  # fmt: skip
    assert_clean_failure(streamd(*args, cwd=files["cwd"], env=env), "Redis")


def test_unreachable_kafka_is_one_line(files):
    env = {"STREAMD_KAFKA__BOOTSTRAP_SERVERS": CLOSED_PORT}
    assert_clean_failure(streamd("ingest", str(REPO / "tests" / "test_cli_errors.py"), "--stream", "s", cwd=files["cwd"], env=env))


# --- corrupt input files ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["noise.wav", "noise.mp3", "cut.wav", "empty.flac", "does-not-exist.ogg"])
def test_ingest_corrupt_audio(files, name):
    assert_clean_failure(streamd("ingest", name, "--stream", "s", cwd=files["cwd"]), name)


def test_recognize_corrupt_audio(files, redis_url):
    env = {"STREAMD_MODEL__WEIGHTS": str(REPO / "models" / "streamd-hash128.safetensors"),
           "STREAMD_REDIS__URL": redis_url, "STREAMD_STORE__CATALOG": "cli-errors-none"}  # fmt: skip
    assert_clean_failure(streamd("recognize", "cut.wav", cwd=files["cwd"], env=env), "cut.wav")


def test_index_corrupt_audio_reports_the_file_and_fails(files, redis_url, unique):
    catalog = unique("cat").replace(".", "-")[:100]
    env = {"STREAMD_MODEL__WEIGHTS": str(REPO / "models" / "streamd-hash128.safetensors"), "STREAMD_REDIS__URL": redis_url}
    try:
        result = streamd("index", "music", "--catalog", catalog, cwd=files["cwd"], env=env)
        output = result.stdout + result.stderr
        assert result.returncode != 0 and "Traceback" not in output, output
        assert "a.wav" in output, output
    finally:
        streamd("catalog", "delete", catalog, "--yes", cwd=files["cwd"], env=env)


@pytest.mark.parametrize("command", [["eval", "--queries", "1", "--weights"], ["run", "--http-port", "0"]])
@pytest.mark.parametrize("weights", ["weights.pt", "garbage.safetensors", "missing.safetensors"])
def test_weights_that_are_not_safetensors_are_refused(files, command, weights):
    """A pickle (.pt) is never unpickled: the loader reads safetensors only and says so."""
    args = [*command, weights] if command[0] == "eval" else command
    env = {"STREAMD_MODEL__WEIGHTS": weights, "STREAMD_KAFKA__BOOTSTRAP_SERVERS": CLOSED_PORT}
    assert_clean_failure(streamd(*args, cwd=files["cwd"], env=env), weights)


def test_simulate_with_corrupt_catalog_audio(files):
    result = streamd("simulate", "--catalog-dir", "music", "--out", "sim", "--hours", "0.01", "--streams", "1", cwd=files["cwd"])
    assert_clean_failure(result)


@pytest.mark.parametrize("args,expected", [
    (["simulate", "--catalog-dir", "nowhere", "--out", "sim"], "nowhere"),
    (["simulate", "--catalog-dir", "music", "--out", "sim", "--weights", "catalog=banana"], "banana"),
    (["score", "--truth", "truth.json", "--events", "events.jsonl"], "truth.json"),
    (["score", "--truth", "nowhere.json", "--events", "events.jsonl"], "nowhere.json"),
])  # fmt: skip
def test_simulate_and_score_with_bad_inputs(files, args, expected):
    assert_clean_failure(streamd(*args, cwd=files["cwd"]), expected)


def test_bench_fails_cleanly(files):
    result = streamd("bench", "--no-such-option", cwd=files["cwd"])
    assert result.returncode != 0 and "Traceback" not in result.stdout + result.stderr
