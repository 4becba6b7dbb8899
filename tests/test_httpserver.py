"""The ops HTTP port, hit with urllib over a real socket."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from streamd.config import load_config
from streamd.httpserver import Heartbeat, OpsServer
from streamd.metrics import Metrics


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture
def parts():
    clock = FakeClock()
    state = {"consumer": True, "catalog": True, "model": True}

    def broken() -> bool:
        raise RuntimeError("redis down")

    checks = {name: (lambda name=name: state[name]) for name in state}
    metrics = Metrics(process=False)
    server = OpsServer("127.0.0.1", 0, metrics.render, Heartbeat(30.0, clock), checks)
    with server:
        yield server, clock, state, metrics, broken


def test_healthz_follows_the_loop_heartbeat(parts):
    server, clock, *_ = parts
    status, headers, body = get(server.url + "/healthz")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["status"] == "ok"
    clock.now += 31.0  # the loop stopped ticking
    status, _, body = get(server.url + "/healthz")
    assert status == 503 and json.loads(body) == {"status": "stalled", "since_last_tick_s": 31.0}
    server.heartbeat.beat()
    assert get(server.url + "/healthz")[0] == 200


def test_readyz_needs_every_check(parts):
    server, _, state, _, broken = parts
    status, _, body = get(server.url + "/readyz")
    assert status == 200 and json.loads(body) == {
        "status": "ready", "checks": {"consumer": True, "catalog": True, "model": True}}  # fmt: skip
    state["catalog"] = False
    status, _, body = get(server.url + "/readyz")
    assert status == 503 and json.loads(body)["checks"]["catalog"] is False
    state["catalog"] = True
    server.ready_checks["redis"] = broken  # a check that raises is a failing check, not a 500
    status, _, body = get(server.url + "/readyz")
    assert status == 503 and json.loads(body)["checks"]["redis"] is False


def test_metrics_serves_the_registry(parts):
    server, _, _, metrics, _ = parts
    metrics.chunks.inc(7)
    status, headers, body = get(server.url + "/metrics?debug=1")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
    assert b"streamd_chunks_consumed_total 7.0" in body
    status, headers, body = get(server.url + "/metrics", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


def test_anything_else_is_404_or_405(parts):
    server, *_ = parts
    for path in ("/", "/metrics/", "/healthz/extra", "/favicon.ico", "/../etc/passwd"):
        assert get(server.url + path)[0] == 404, path
    status, headers, _ = get(server.url + "/metrics", method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"


def test_binds_the_configured_address_and_stops_cleanly():
    config = load_config(overrides={"daemon.http_port": 0, "daemon.health_stall_s": 5}, environ={})
    server = OpsServer.from_config(config, Metrics(process=False).render)
    assert server.heartbeat.max_stall_s == 5.0
    server.start()
    assert server.start() is server  # starting twice is harmless
    port = server.port
    assert port > 0 and server.url == f"http://127.0.0.1:{port}"
    assert get(server.url + "/readyz")[0] == 200  # no checks: ready
    server.stop()
    server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with pytest.raises(RuntimeError):
        server.port  # noqa: B018
