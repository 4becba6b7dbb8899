"""Security: Redis with TLS + ACL users, Kafka with SASL_SSL (SCRAM-SHA-512), safetensors-only
weights, an ops port that serves only health and metrics, and secrets kept out of logs.

The servers are private ones started here (tests/security_helpers.py) with a throwaway CA, never
the shared local stack. See docs/security.md for the threat model these tests back.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import redis
import torch
from security_helpers import KAFKA_USER, REDIS_USERS, make_certs, start_sasl_kafka, start_tls_redis, stop

from streamd import protocol
from streamd.config import load_config
from streamd.httpserver import Heartbeat, OpsServer
from streamd.logs import configure_logging
from streamd.model.api import ModelLoadError, load_fingerprinter
from streamd.store.catalog import Catalog, Track, connect
from streamd.store.replica import Replica

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory, certs):
    server = start_tls_redis(tmp_path_factory.mktemp("redis"), certs)
    yield server
    stop(server.proc)


def redis_config(server, user: str | None, password: str | None = None, ca: bool = True, **extra):
    overrides = {"redis.url": server.url, "redis.username": user or "",
                 "redis.password": password if password is not None else REDIS_USERS[user][0] if user else "",
                 "redis.ssl_ca_certs": str(server.certs.ca) if ca else "", "redis.socket_timeout_s": 2.0}  # fmt: skip
    overrides.update(extra)
    return load_config(overrides=overrides, environ={})


def track(track_id: str, n: int = 20, seed: int = 0) -> Track:
    rng = np.random.default_rng(seed)
    return Track(track_id, rng.integers(0, 256, (n, 8), dtype=np.uint8), np.arange(1, n + 1, dtype=np.float32),
                 {"title": track_id})  # fmt: skip


# --- Redis: TLS and ACL users ----------------------------------------------------------------


def test_plaintext_connection_to_the_tls_port_fails(tls_redis):
    client = redis.Redis(host="127.0.0.1", port=tls_redis.port, socket_timeout=2, socket_connect_timeout=2)
    with pytest.raises(redis.ConnectionError):
        client.ping()


def test_a_ca_file_with_a_plaintext_url_is_a_config_error(tls_redis):
    from streamd.config import ConfigError

    with pytest.raises(ConfigError, match="rediss://"):
        connect(redis_config(tls_redis, "daemon", **{"redis.url": "redis://127.0.0.1:6379/0"}).redis)


def test_tls_without_trusting_the_ca_fails(tls_redis):
    client = connect(redis_config(tls_redis, "daemon", ca=False).redis)
    with pytest.raises(redis.ConnectionError, match="(?i)certificate"):
        client.ping()


@pytest.mark.parametrize("user,password", [(None, ""), ("daemon", "wrong"), ("nobody", "x")])
def test_default_user_is_off_and_wrong_credentials_fail(tls_redis, user, password):
    client = connect(redis_config(tls_redis, user, password).redis)
    with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
        client.get("streamd:catalogs")


def test_indexer_writes_and_the_daemons_read_only_replica_follows_over_tls(tls_redis):
    """The daemon's Redis user needs read access only: full sync and following changes (XREAD)."""
    name = f"sec-{time.time_ns()}"
    writer = Catalog(connect(redis_config(tls_redis, "indexer").redis), name)
    info = writer.ensure(64, 48, "test-model")
    writer.put_track(info.generation, track("t1"), 64)
    replica = Replica.from_config(redis_config(tls_redis, "daemon", **{"store.catalog": name}))
    replica.start(timeout_s=20)
    try:
        assert replica.n_tracks == 1 and replica.size == 20 and replica.last_error is None
        writer.put_track(info.generation, track("t2", seed=1), 64)
        assert replica.wait_for(lambda r: r.n_tracks == 2, timeout_s=10), replica.last_error
        hits = replica.search(track("t2", seed=1).codes[:3], 1)
        assert list(hits.track_ids[:, 0]) == ["t2"] * 3
    finally:
        replica.stop()
        writer.delete()


def test_the_daemon_user_cannot_write_or_read_other_keys(tls_redis):
    client = connect(redis_config(tls_redis, "daemon").redis)
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set("streamd:x", b"1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        Catalog(client, "sec-ro").ensure(64, 48, "m")  # the catalog's write scripts
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.get("other:key")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.flushall()
    assert client.get("streamd:absent") is None  # but it reads streamd keys


def test_cli_reports_a_refused_redis_login_in_one_line(tls_redis, tmp_path):
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "STREAMD_REDIS__URL": tls_redis.url, "STREAMD_REDIS__USERNAME": "daemon",
           "STREAMD_REDIS__PASSWORD": "wrong-secret-123", "STREAMD_REDIS__SSL_CA_CERTS": str(tls_redis.certs.ca)}  # fmt: skip
    result = subprocess.run([str(Path(sys.executable).with_name("streamd")), "catalog", "list"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error:") and "wrong-secret-123" not in result.stderr + result.stdout


# --- model weights: safetensors only -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["torch.save", "garbage", "empty"])
def test_weights_that_are_not_safetensors_are_refused_without_unpickling(tmp_path, monkeypatch, kind):
    path = tmp_path / "model.pt"
    if kind == "torch.save":
        torch.save({"weight": torch.zeros(3)}, path)  # a pickle archive
    else:
        path.write_bytes(b"" if kind == "empty" else b"\x80\x04K\x01." * 10)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on untrusted weights")

    monkeypatch.setattr(torch, "load", no_unpickling)
    config = load_config(overrides={"model.weights": str(path), "model.device": "cpu"}, environ={})
    with pytest.raises(ModelLoadError, match="not a streamd safetensors weights file"):
        load_fingerprinter(config.model)


def test_no_torch_load_without_weights_only_in_the_code():
    offenders = []
    for path in sorted((REPO / "streamd").rglob("*.py")):
        for match in re.finditer(r"torch\.load\(([^)]*)\)", path.read_text()):
            if "weights_only=True" not in match.group(1):
                offenders.append(f"{path.relative_to(REPO)}: {match.group(0)}")
        if re.search(r"^\s*import pickle|pickle\.loads?\(", path.read_text(), re.M):
            offenders.append(f"{path.relative_to(REPO)}: pickle")
    assert not offenders, offenders


# --- the ops HTTP port ----------------------------------------------------------------------------


def test_ops_port_serves_only_health_and_metrics():
    with OpsServer("127.0.0.1", 0, lambda: (b"m 1\n", "text/plain"), Heartbeat(30)) as ops:
        for path in ("/healthz", "/readyz", "/metrics", "/metrics?name=x"):
            assert urllib.request.urlopen(ops.url + path, timeout=5).status == 200
        for path in ("/", "/admin", "/config", "/debug/pprof", "/metrics/../config", "/healthz/", "/.env", "/%2e%2e/"):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(ops.url + path, timeout=5)
            assert info.value.code == 404, path
        for method in ("POST", "PUT", "DELETE"):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(urllib.request.Request(ops.url + "/metrics", data=b"x", method=method), timeout=5)
            assert info.value.code == 405


# --- secrets in logs ------------------------------------------------------------------------------


def test_redacted_config_masks_secret_fields_and_url_passwords():
    config = load_config(overrides={"redis.url": "rediss://daemon:url-secret-1@cache:6380/0", "redis.password": "pw-2",
                                    "kafka.sasl_password": "sasl-secret-3"}, environ={})  # fmt: skip
    text = repr(config.redacted())
    for secret in ("url-secret-1", "pw-2", "sasl-secret-3"):
        assert secret not in text
    assert config.redacted()["redis"]["url"] == "rediss://daemon:***@cache:6380/0"


def test_log_lines_never_carry_configured_secrets():
    config = load_config(overrides={"redis.url": "rediss://daemon:url-secret-1@cache:6380/0",
                                    "kafka.sasl_password": "sasl-secret-3"}, environ={})  # fmt: skip
    for fmt in ("json", "text"):
        out = io.StringIO()
        configure_logging(config, fmt=fmt, level="DEBUG", stream=out)
        log = logging.getLogger("kafka.conn")
        log.debug("connecting with %s", {"sasl_plain_password": "sasl-secret-3"})
        log.info("redis at %s", config.redis.url, extra={"url": config.redis.url, "cfg": config.redacted()})
        try:
            raise ValueError("bad login sasl-secret-3")
        except ValueError:
            log.exception("failed")
        text = out.getvalue()
        assert "sasl-secret-3" not in text and "url-secret-1" not in text and text.count("***") >= 4, text
    configure_logging(config, fmt="json", level="WARNING")


# --- Kafka: SASL_SSL with SCRAM-SHA-512 -----------------------------------------------------------


@pytest.fixture(scope="module")
def sasl_kafka(tmp_path_factory, certs):
    server = start_sasl_kafka(tmp_path_factory.mktemp("kafka"), certs)
    yield server
    stop(server.proc)


def kafka_config(server, user=KAFKA_USER, **extra):
    overrides = server.overrides(user)
    overrides.update(extra)
    return load_config(overrides=overrides, environ={})


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sasl_ssl_produce_and_consume_with_the_right_password(sasl_kafka):
    from kafka import TopicPartition

    from streamd.kafka_io import BoundedProducer, ensure_topics, make_consumer

    config = kafka_config(sasl_kafka)
    ensure_topics(config, {"secure.audio": 1})
    record = protocol.encode("s", np.zeros(100, np.float32), 12000, 0, 0)
    with BoundedProducer(config) as producer:
        producer.send("secure.audio", value=record.value, key=record.key, headers=record.headers)
    consumer = make_consumer(config, group_id="")
    tp = TopicPartition("secure.audio", 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = []
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        got = [r for rs in consumer.poll(timeout_ms=500).values() for r in rs]
    consumer.close()
    assert protocol.decode_record(got[0]).stream_id == "s"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", ["wrong-password", "unknown-user", "plaintext", "no-ca"])
def test_sasl_ssl_refuses_bad_clients_with_a_clear_error(sasl_kafka, case):
    from streamd.errors import StreamdError
    from streamd.kafka_io import make_producer

    extra = {
        "wrong-password": {"kafka.sasl_password": "not-the-password"},
        "unknown-user": {"kafka.sasl_username": "mallory"},
        "plaintext": {"kafka.security_protocol": "PLAINTEXT"},
        "no-ca": {"kafka.ssl_cafile": ""},
    }[case]
    config = kafka_config(sasl_kafka, **extra)
    with pytest.raises(StreamdError) as info:
        make_producer(config).close()
    message = str(info.value)
    assert "not-the-password" not in message and KAFKA_USER[1] not in message
    if case in ("wrong-password", "unknown-user"):
        assert "authentication" in message.lower(), message
    if case == "no-ca":
        assert "kafka.ssl_cafile" in message, message


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_daemon_over_sasl_ssl_and_tls_redis_keeps_secrets_out_of_its_logs(sasl_kafka, tls_redis):
    """The daemon as deployed securely: SCRAM over TLS to Kafka, the read-only ACL user over TLS to
    Redis with the password inside redis.url; its DEBUG logs (kafka-python's included) carry neither."""
    from daemon_doubles import ProjectionFingerprinter

    from streamd.daemon.runner import Daemon
    from streamd.kafka_io import BoundedProducer, ensure_topics
    from streamd.metrics import Metrics

    daemon_pw = REDIS_USERS["daemon"][0]
    url = tls_redis.url.replace("rediss://", f"rediss://daemon:{daemon_pw}@")
    config = kafka_config(sasl_kafka, **{"redis.url": url, "redis.ssl_ca_certs": str(tls_redis.certs.ca),
                                         "store.catalog": "sec-daemon", "daemon.http_port": 0,
                                         "daemon.commit_interval_s": 0.5, "kafka.audio_partitions": 1})  # fmt: skip
    out = io.StringIO()
    configure_logging(config, fmt="json", level="DEBUG", stream=out)
    ensure_topics(config, {config.kafka.audio_topic: 1})
    tone = (0.2 * np.sin(np.arange(12000 * 3) * 0.05)).astype(np.float32)
    now = int(time.time() * 1000)
    with BoundedProducer(config) as producer:
        for seq, start in enumerate(range(0, len(tone), 6000)):
            r = protocol.encode("secure", tone[start : start + 6000], 12000, seq, now + seq * 500)
            producer.send(config.kafka.audio_topic, value=r.value, key=r.key, headers=r.headers)
        producer.send(config.kafka.audio_topic, value=b"junk", key=b"secure", headers=[])
    metrics = Metrics(process=False, gpu=False)
    daemon = Daemon(config, fingerprinter=ProjectionFingerprinter(), metrics=metrics)  # the real Replica
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 90
        while metrics.chunks._value.get() < 6 and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.2)
        assert metrics.chunks._value.get() == 6
        assert metrics.chunk_errors.labels("missing_header")._value.get() == 1
    finally:
        daemon.stop.set()
        thread.join(60)
        configure_logging(config, fmt="json", level="WARNING")
    text = out.getvalue()
    assert "daemon started" in text and "dead-letter" in text
    for secret in (KAFKA_USER[1], daemon_pw):
        assert secret not in text
