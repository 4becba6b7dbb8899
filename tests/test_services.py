"""`streamd services`: status of the running stack, idempotent up, and clear failures."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from streamd import services
from streamd.config import load_config
from streamd.services import ServicesError

REPO = Path(__file__).resolve().parents[1]


def streamd(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamd", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def isolated_config(tmp_path: Path, **overrides):
    """A config whose stack lives in ``tmp_path`` on ports nobody uses."""
    values = {
        "services.state_dir": str(tmp_path / "state"),
        "services.kafka_port": free_port(),
        "services.kafka_controller_port": free_port(),
        "services.redis_port": free_port(),
        "services.start_timeout_s": 60,
    }
    values.update({f"services.{k}": v for k, v in overrides.items()})
    return load_config(overrides=values)


def test_status_reports_both_services(config, kafka_bootstrap, redis_url):
    result = streamd("services", "status")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    kafka = next(line for line in lines if line.startswith("kafka"))
    redis = next(line for line in lines if line.startswith("redis"))
    assert " up " in kafka and "pid " in kafka and "version 4." in kafka
    assert f"127.0.0.1:{config.services.kafka_port}" in kafka
    assert " up " in redis and "pid " in redis and "version " in redis
    assert f"127.0.0.1:{config.services.redis_port}" in redis
    assert "data " in result.stdout and "MB" in result.stdout


def test_up_is_idempotent(config, kafka_bootstrap, redis_url):
    before = {s.name: s.pid for s in services.status(config)}
    result = streamd("services", "up")
    assert result.returncode == 0, result.stderr
    assert "kafka already running" in result.stderr and "redis already running" in result.stderr
    assert {s.name: s.pid for s in services.status(config)} == before


def test_port_taken_by_another_program_is_reported(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        config = isolated_config(tmp_path, kafka_port=squatter.getsockname()[1])
        with pytest.raises(ServicesError, match=rf"port 127.0.0.1:{squatter.getsockname()[1]} is in use by"):
            services.up(config, log=lambda _: None)


def test_missing_java_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(ServicesError, match=r"Java 17\+ not found .*apt-get install -y default-jre-headless"):
        services.up(isolated_config(tmp_path), log=lambda _: None)


def test_missing_maven_is_reported(tmp_path, monkeypatch):
    bin_dir = tmp_path / "java-only-bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(shutil.which("java"))
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(ServicesError, match=r"Maven \(mvn\) not found"):
        services.up(isolated_config(tmp_path, kafka_version="9.9.9"), log=lambda _: None)


def test_status_of_a_stack_that_was_never_started(tmp_path):
    statuses = services.status(isolated_config(tmp_path))
    assert [(s.name, s.running, s.ready, s.pid) for s in statuses] == [
        ("kafka", False, False, None),
        ("redis", False, False, None),
    ]


def share_jars(config) -> None:
    """Point an isolated stack at the project's jars, so its tests do not download them again."""
    version = config.services.kafka_version
    main_libs = services.state_dir(load_config()) / "kafka" / version / "libs"
    if (main_libs / ".complete").exists():
        libs = services.state_dir(config) / "kafka" / version / "libs"
        libs.parent.mkdir(parents=True)
        libs.symlink_to(main_libs)


@pytest.mark.slow
def test_a_broker_that_dies_while_starting_is_reported_with_its_log(tmp_path):
    config = isolated_config(tmp_path)
    share_jars(config)
    data = services.state_dir(config) / "kafka" / "data"
    data.mkdir(parents=True)
    (data / "meta.properties").write_text("version=1\nnode.id=99\ncluster.id=broken\n")
    try:
        with pytest.raises(
            ServicesError, match=r"(?s)kafka exited with status \d+ while starting; last lines of .*kafka.out"
        ):
            services.up(config, log=lambda _: None)
    finally:
        services.down(config, log=lambda _: None)


@pytest.mark.slow
def test_full_lifecycle_on_other_ports(tmp_path):
    """up from nothing (format), status, up again, down, up keeps the data, down."""
    config = isolated_config(tmp_path)
    share_jars(config)
    messages: list[str] = []
    try:
        statuses = services.up(config, log=messages.append)
        assert all(s.ready for s in statuses), statuses
        assert any("formatting Kafka storage" in m for m in messages)
        from streamd.kafka_io import ensure_topics

        kafka_config = load_config(
            overrides={"kafka.bootstrap_servers": f"127.0.0.1:{config.services.kafka_port}"}
        )
        assert ensure_topics(kafka_config, {"lifecycle": 2}) == ["lifecycle"]

        messages.clear()
        services.up(config, log=messages.append)
        assert messages == [m for m in messages if "already running" in m] and len(messages) == 2

        pids = [s.pid for s in statuses]
        services.down(config, log=messages.append)
        assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)
        assert not any(s.running for s in services.status(config))

        messages.clear()
        services.up(config, log=messages.append)
        assert not any("formatting" in m for m in messages)
        assert ensure_topics(kafka_config, {"lifecycle": 2}) == []  # the topic survived the restart
    finally:
        services.down(config, log=lambda _: None)
