"""Run a real Prometheus against live targets and ask which PromQL expressions return data.

Used by the deployment tests: the Grafana dashboard and the alert rules are only worth something
if their queries find series in what the daemon actually exports. :class:`PrometheusServer` starts
Debian's ``prometheus`` binary on a free loopback port with a one-second scrape interval, waits
until it has scraped every target a few times (so ``rate()`` over a short window has two
samples), and evaluates expressions through the HTTP API. Nothing is mocked: a name that the
exporter does not emit, or a query that does not parse, shows up as such.

    with PrometheusServer(["127.0.0.1:9108"]) as prom:
        prom.wait_for_scrapes(3)
        results = prom.evaluate(["rate(streamd_chunks_consumed_total[1m])"])
        missing = [r.expr for r in results if not r.has_data]
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

PROMETHEUS_BINARY = "prometheus"


class PrometheusError(RuntimeError):
    """Prometheus did not start, did not scrape its targets in time, or answered with an error."""


@dataclass(frozen=True)
class QueryResult:
    """What one expression returned: how many series, how many of them with a finite value."""

    expr: str
    series: int
    finite_series: int
    error: str | None = None

    @property
    def has_data(self) -> bool:
        """At least one series came back (a NaN quantile of an idle histogram still counts)."""
        return self.error is None and self.series > 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape_config(targets: Sequence[str], scrape_interval_s: float, rule_files: Sequence[Path] = ()) -> dict:
    """A minimal prometheus.yml: one job ``streamd`` scraping ``targets`` over plain HTTP."""
    interval = f"{int(scrape_interval_s * 1000)}ms"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [{"job_name": "streamd", "static_configs": [{"targets": list(targets)}]}],
    }


class PrometheusServer:
    """A throw-away Prometheus process scraping ``targets``; use it as a context manager."""

    def __init__(
        self,
        targets: Sequence[str],
        scrape_interval_s: float = 1.0,
        rule_files: Sequence[Path] = (),
        binary: str = PROMETHEUS_BINARY,
        start_timeout_s: float = 30.0,
    ):
        self.targets = list(targets)
        self.scrape_interval_s = scrape_interval_s
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.binary = binary
        self.start_timeout_s = start_timeout_s
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None
        self._dir: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the process and return once its ``/-/ready`` endpoint answers."""
        if shutil.which(self.binary) is None:
            raise PrometheusError(f"{self.binary} not found (Debian: apt-get install prometheus)")
        self._dir = Path(tempfile.mkdtemp(prefix="streamd-prom-"))
        config = self._dir / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(scrape_config(self.targets, self.scrape_interval_s, self.rule_files))
        )
        self.port = free_port()
        log = (self._dir / "prometheus.log").open("wb")
        self._proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self._proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        raise PrometheusError(f"prometheus not ready within {self.start_timeout_s} s")

    def stop(self) -> None:
        """Terminate the process and delete its data directory."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def log_tail(self, n_chars: int = 2000) -> str:
        if self._dir is None or not (self._dir / "prometheus.log").exists():
            return ""
        return (self._dir / "prometheus.log").read_text(errors="replace")[-n_chars:]

    def api(self, path: str, **params: str) -> dict:
        """GET ``/api/v1/<path>`` and return its ``data``; an API error raises :class:`PrometheusError`."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # 400/422 carry the PromQL error in the body
            body = json.load(exc)
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def wait_for_scrapes(self, n_scrapes: int = 3, timeout_s: float = 30.0) -> None:
        """Block until every target is up and has been scraped at least ``n_scrapes`` times."""
        deadline = time.monotonic() + timeout_s
        expr = f"count_over_time(up[{int(max(60, 10 * n_scrapes * self.scrape_interval_s))}s])"
        while time.monotonic() < deadline:
            counts = {
                s["metric"].get("instance"): float(s["value"][1])
                for s in self.api("query", query=expr)["result"]
            }
            up = {
                s["metric"].get("instance"): s["value"][1] == "1"
                for s in self.api("query", query="up")["result"]
            }
            if all(up.get(t) and counts.get(t, 0) >= n_scrapes for t in self.targets):
                return
            time.sleep(self.scrape_interval_s / 2)
        raise PrometheusError(
            f"targets {self.targets} not scraped {n_scrapes} times within {timeout_s} s: up={up}"
        )

    def query(self, expr: str) -> QueryResult:
        """Evaluate ``expr`` now (instant query); a parse or evaluation error is returned, not raised."""
        try:
            data = self.api("query", query=expr)
        except PrometheusError as exc:
            return QueryResult(expr, 0, 0, str(exc))
        result = data["result"]
        if data["resultType"] == "scalar":
            result = [{"value": result}]
        elif data["resultType"] == "matrix":
            result = [{"value": s["values"][-1]} for s in result if s["values"]]
        finite = sum(1 for s in result if s["value"][1] not in ("NaN", "+Inf", "-Inf"))
        return QueryResult(expr, len(result), finite)

    def evaluate(self, exprs: Iterable[str]) -> list[QueryResult]:
        """:meth:`query` for each expression, in order."""
        return [self.query(expr) for expr in exprs]

    def alerts(self) -> list[dict]:
        """The alerts currently pending or firing (from the loaded ``rule_files``)."""
        return self.api("alerts")["alerts"]

    def rules(self) -> list[dict]:
        """Every loaded rule with its ``health`` (``ok``, ``err``, ``unknown`` before the first evaluation)."""
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def wait_for_rule_evaluation(self, timeout_s: float = 30.0) -> list[dict]:
        """Block until every loaded rule has been evaluated at least once; return the rules."""
        deadline = time.monotonic() + timeout_s
        while True:
            rules = self.rules()
            if all(rule["health"] != "unknown" for rule in rules) or time.monotonic() > deadline:
                return rules
            time.sleep(self.scrape_interval_s / 2)
