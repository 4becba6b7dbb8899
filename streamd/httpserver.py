"""The ops HTTP port: ``/healthz``, ``/readyz`` and ``/metrics``, nothing else.

- ``/healthz`` (liveness): 200 while the main loop has ticked within ``max_stall_s`` — a process
  that is up but stuck fails it and gets restarted.
- ``/readyz`` (readiness): 200 when every named check passes (consumer has partitions, catalog
  loaded, model loaded, ...), else 503 with the failing checks; a check that raises counts as
  failing. Both answer a small JSON body.
- ``/metrics``: the Prometheus text exposition of the daemon's registry.

Any other path is 404, any method but GET/HEAD 405. It is a stdlib ``ThreadingHTTPServer`` on a
background thread: one thread per request, so a slow scrape never blocks the daemon loop.
``port=0`` binds an ephemeral port; :attr:`OpsServer.port` tells which.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamd.config import Config

log = logging.getLogger(__name__)

HEALTH_PATH, READY_PATH, METRICS_PATH = "/healthz", "/readyz", "/metrics"


class Heartbeat:
    """When the main loop last ticked. ``beat()`` from the loop; ``alive()`` from /healthz.

    Counts as ticked at creation, so a daemon gets ``max_stall_s`` to start its loop.
    """

    def __init__(self, max_stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_stall_s = max_stall_s
        self._clock = clock
        self._last = clock()

    def beat(self) -> None:
        self._last = self._clock()

    def since_last_s(self) -> float:
        return self._clock() - self._last

    def alive(self) -> bool:
        return self.since_last_s() <= self.max_stall_s


class OpsServer:
    """Serve health, readiness and metrics on ``host:port`` from a background thread.

    ``metrics`` returns (body, content type), e.g. :meth:`streamd.metrics.Metrics.render`.
    ``ready_checks`` maps a name to a callable that says whether that part is ready.
    Use as a context manager, or ``start()`` / ``stop()``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Callable[[], tuple[bytes, str]],
        heartbeat: Heartbeat,
        ready_checks: Mapping[str, Callable[[], bool]] | None = None,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.metrics = metrics
        self.heartbeat = heartbeat
        self.ready_checks = dict(ready_checks or {})
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(
        cls,
        config: Config,
        metrics: Callable[[], tuple[bytes, str]],
        ready_checks: Mapping[str, Callable[[], bool]] | None = None,
    ) -> OpsServer:
        """A server on ``daemon.http_host:http_port`` with a heartbeat of ``daemon.health_stall_s``."""
        d = config.daemon
        return cls(d.http_host, d.http_port, metrics, Heartbeat(d.health_stall_s), ready_checks)

    @property
    def port(self) -> int:
        """The bound port (the ephemeral one when asked for port 0)."""
        if self._server is None:
            raise RuntimeError("the ops server is not running")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        host = self._server.server_address[0] if self._server else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> OpsServer:
        if self._server is not None:
            return self
        server = _Server((self.host, self.requested_port), _Handler)
        server.ops = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="streamd-ops-http", daemon=True
        )  # a short poll interval makes stop() quick
        self._thread.start()
        log.info("ops http listening", extra={"url": self.url})
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)
        self._server = self._thread = None

    def __enter__(self) -> OpsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def health(self) -> tuple[int, dict[str, Any]]:
        since = self.heartbeat.since_last_s()
        ok = self.heartbeat.alive()
        body = {"status": "ok" if ok else "stalled", "since_last_tick_s": round(since, 3)}
        return (200 if ok else 503), body

    def readiness(self) -> tuple[int, dict[str, Any]]:
        checks: dict[str, bool] = {}
        for name, check in self.ready_checks.items():
            try:
                checks[name] = bool(check())
            except Exception as exc:  # a broken check means "not ready", never a crashed request
                log.warning("readiness check failed", extra={"check": name, "error": repr(exc)})
                checks[name] = False
        ok = all(checks.values())
        return (200 if ok else 503), {"status": "ready" if ok else "not ready", "checks": checks}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    ops: OpsServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # seconds a client may take to send its request
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _not_allowed(self) -> None:
        self._send(405, b"method not allowed\n", "text/plain; charset=utf-8", True, {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _respond(self, send_body: bool) -> None:
        ops = self.server.ops
        path = self.path.split("?", 1)[0]
        if path == METRICS_PATH:
            try:
                body, content_type = ops.metrics()
            except Exception:
                log.exception("rendering metrics failed")
                self._send(500, b"metrics unavailable\n", "text/plain; charset=utf-8", send_body)
                return
            self._send(200, body, content_type, send_body)
        elif path in (HEALTH_PATH, READY_PATH):
            status, document = ops.health() if path == HEALTH_PATH else ops.readiness()
            self._send(status, json.dumps(document).encode() + b"\n", "application/json", send_body)
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8", send_body)

    def _send(
        self, status: int, body: bytes, content_type: str, send_body: bool, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("ops http request", extra={"client": self.client_address[0], "request": format % args})
