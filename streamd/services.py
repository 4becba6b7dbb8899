"""The local stack: a single-node Apache Kafka (KRaft) broker and a Redis server on 127.0.0.1.

`streamd services up|down|status` call :func:`up`, :func:`down` and :func:`status`. Everything the
stack needs lives in the project-local state folder (``services.state_dir``, default ``.local``):

    .local/m2/                     Maven repository cache (broker jars and their dependencies)
    .local/kafka/<version>/libs/   the broker's classpath, copied there by Maven
    .local/kafka/data/             KRaft metadata and topic data (formatted on first start)
    .local/kafka/logs/             server.log (rolled by log4j2) and kafka.out (stdout/stderr)
    .local/kafka/server.properties rendered from deploy/local/server.properties.template
    .local/redis/                  redis.conf, dump.rdb, redis.log
    .local/*.pid, .local/*.json    which process runs which service, started how

The broker runs from Maven Central jars on the machine's Java (17+), Redis is Debian's redis-server
(installed with apt-get when missing and we are root). ``up`` is idempotent and waits, at most
``services.start_timeout_s``, until the broker answers a metadata request and Redis answers PING.
When something is missing (no Java, no Maven, a port taken by another program) it says so and stops.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from streamd.config import Config
from streamd.errors import StreamdError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEPLOY_DIR = PROJECT_ROOT / "deploy" / "local"
HOST = "127.0.0.1"
MIN_JAVA = 17
# What the command line of each service's process contains (guards against a reused pid).
_MARKERS = {"kafka": "kafka.Kafka", "redis": "redis-server"}

Log = Callable[[str], None]


class ServicesError(StreamdError):
    """The local stack could not be started, stopped or inspected; the message says why."""


@dataclass(frozen=True)
class ServiceStatus:
    """What `services status` reports about one service."""

    name: str
    running: bool
    ready: bool
    pid: int | None
    address: str
    version: str
    data_dir: Path
    disk_bytes: int
    detail: str = ""


# --- paths and small helpers ------------------------------------------------------------------


def state_dir(config: Config) -> Path:
    """The state folder; a relative ``services.state_dir`` is relative to the project root."""
    path = Path(config.services.state_dir).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


@dataclass(frozen=True)
class _Paths:
    root: Path

    @property
    def lock(self) -> Path:
        return self.root / "services.lock"

    @property
    def m2(self) -> Path:
        return self.root / "m2"

    @property
    def kafka(self) -> Path:
        return self.root / "kafka"

    def kafka_libs(self, version: str) -> Path:
        return self.kafka / version / "libs"

    @property
    def kafka_data(self) -> Path:
        return self.kafka / "data"

    @property
    def kafka_logs(self) -> Path:
        return self.kafka / "logs"

    @property
    def kafka_properties(self) -> Path:
        return self.kafka / "server.properties"

    @property
    def redis(self) -> Path:
        return self.root / "redis"

    def pid_file(self, service: str) -> Path:
        return self.root / f"{service}.pid"

    def info_file(self, service: str) -> Path:
        return self.root / f"{service}.json"


def _disk_usage(path: Path) -> int:
    """Bytes of disk the files under ``path`` occupy, like ``du`` (Kafka's index files are sparse)."""
    if path.is_file():
        return path.stat().st_blocks * 512
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def _tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _port_open(port: int, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((HOST, port)) == 0


def _who_listens(port: int) -> str:
    """A best-effort description of the process listening on ``port``, for error messages."""
    try:
        out = subprocess.run(
            ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "another process"
    match = re.search(r'users:\(\("([^"]+)",pid=(\d+)', out)
    return f"{match.group(1)} (pid {match.group(2)})" if match else "another process"


@contextlib.contextmanager
def _locked(paths: _Paths) -> Iterator[None]:
    """Serialise up/down between concurrent invocations (several test sessions, several shells)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _live_pid(paths: _Paths, service: str, marker: str) -> int | None:
    """The pid recorded for ``service`` if that process is alive and is what we started."""
    pid_file = paths.pid_file(service)
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    if marker not in cmdline or state == "Z":
        return None
    return pid


def _read_info(paths: _Paths, service: str) -> dict:
    try:
        return json.loads(paths.info_file(service).read_text())
    except (OSError, ValueError):
        return {}


def _spawn(cmd: list[str], cwd: Path, log_path: Path) -> subprocess.Popen:
    """Start a long-lived server detached from our session, its output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
        log.flush()
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _apt_install(package: str, log: Log) -> None:
    """Install a Debian package when we can (root with apt-get); otherwise say what to run."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServicesError(f"{package} is not installed; install it with: sudo apt-get install -y {package}")
    log(f"installing {package} with apt-get ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    result = subprocess.run(
        ["apt-get", "install", "-y", "-q", package], capture_output=True, text=True, env=env
    )
    if result.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
        result = subprocess.run(
            ["apt-get", "install", "-y", "-q", package], capture_output=True, text=True, env=env
        )
    if result.returncode != 0:
        raise ServicesError(
            f"apt-get install {package} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )


# --- Kafka ------------------------------------------------------------------------------------


def _java() -> str:
    """The `java` binary, checked to be version 17 or newer."""
    home = os.environ.get("JAVA_HOME")
    java = (
        str(Path(home) / "bin" / "java")
        if home and (Path(home) / "bin" / "java").exists()
        else shutil.which("java")
    )
    if java is None:
        raise ServicesError(
            f"Java {MIN_JAVA}+ not found (needed for the Kafka broker); install it with `make deps` "
            "or: sudo apt-get install -y default-jre-headless"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise ServicesError(f"Kafka needs Java {MIN_JAVA}+, but {java} is: {out.strip().splitlines()[0]}")
    return java


def ensure_kafka_jars(config: Config, log: Log = print) -> Path:
    """Resolve the broker's jars from Maven Central into the state folder (once per version)."""
    paths = _Paths(state_dir(config))
    version = config.services.kafka_version
    libs = paths.kafka_libs(version)
    if (libs / ".complete").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServicesError(
            "Maven (mvn) not found (needed to fetch the Kafka jars); install it with `make deps` "
            "or: sudo apt-get install -y maven"
        )
    pom = DEPLOY_DIR / "pom.xml"
    if not pom.exists():
        raise ServicesError(f"{pom} is missing: run streamd from its source checkout")
    log(f"resolving Kafka {version} jars from Maven Central into {libs} ...")
    staging = libs.with_name("libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        mvn, "-q", "-B", "-f", str(pom), f"-Dmaven.repo.local={paths.m2}", f"-Dkafka.version={version}",
        "dependency:copy-dependencies", f"-DoutputDirectory={staging}",
    ]  # fmt: skip
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise ServicesError("Maven did not finish resolving the Kafka jars within 15 minutes") from None
    jars = list(staging.glob("kafka_2.13-*.jar")) if staging.exists() else []
    if result.returncode != 0 or not jars:
        output = (result.stdout + result.stderr).strip()[-3000:]
        raise ServicesError(
            f"Maven could not resolve org.apache.kafka:kafka_2.13:{version} "
            f"(no network to Maven Central, or no such version?):\n{output}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    (libs / ".complete").write_text(version + "\n")
    return libs


def _render_properties(config: Config, paths: _Paths) -> None:
    template = string.Template((DEPLOY_DIR / "server.properties.template").read_text())
    services = config.services
    text = template.substitute(
        kafka_port=services.kafka_port,
        controller_port=services.kafka_controller_port,
        data_dir=paths.kafka_data,
        retention_bytes=services.kafka_retention_mb * 1024 * 1024,
    )
    paths.kafka.mkdir(parents=True, exist_ok=True)
    paths.kafka_properties.write_text(text)


def _new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid format)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _format_storage(java: str, libs: Path, paths: _Paths, log: Log) -> None:
    """Format KRaft storage on first start; a formatted data folder is left alone."""
    if (paths.kafka_data / "meta.properties").exists():
        return
    log(f"formatting Kafka storage in {paths.kafka_data} ...")
    cmd = [
        java, "-Xmx256m", "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format",
        "-t", _new_cluster_id(), "-c", str(paths.kafka_properties),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise ServicesError(f"formatting Kafka storage failed:\n{(result.stdout + result.stderr)[-3000:]}")


def kafka_ready(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """True when the broker at ``bootstrap`` answers a metadata request."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    host, _, port = bootstrap.rpartition(":")
    if not _port_open(int(port)):
        return False
    kafka_logger = logging.getLogger("kafka")
    level = kafka_logger.level
    kafka_logger.setLevel(logging.CRITICAL)  # connection errors while starting are expected
    admin = None
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
            client_id="streamd-services-probe",
        )
        cluster = admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except (KafkaError, OSError, ValueError):
        return False
    finally:
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()
        kafka_logger.setLevel(level)


def _start_kafka(config: Config, paths: _Paths, log: Log) -> subprocess.Popen | None:
    services = config.services
    if _live_pid(paths, "kafka", "kafka.Kafka") is not None:
        return None
    for port in (services.kafka_port, services.kafka_controller_port):
        if _port_open(port):
            raise ServicesError(
                f"port {HOST}:{port} is in use by {_who_listens(port)}, not by a broker streamd started; "
                "stop it or choose other ports (services.kafka_port / services.kafka_controller_port)"
            )
    java = _java()
    libs = ensure_kafka_jars(config, log)
    _render_properties(config, paths)
    _format_storage(java, libs, paths, log)
    paths.kafka_logs.mkdir(parents=True, exist_ok=True)
    heap = f"{services.kafka_heap_mb}m"
    cmd = [
        java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'log4j2.xml'}", f"-Dkafka.logs.dir={paths.kafka_logs}",
        "-cp", f"{libs}/*", "kafka.Kafka", str(paths.kafka_properties),
    ]  # fmt: skip
    log(f"starting Kafka {services.kafka_version} on {HOST}:{services.kafka_port} ...")
    proc = _spawn(cmd, paths.kafka, paths.kafka_logs / "kafka.out")
    paths.pid_file("kafka").write_text(f"{proc.pid}\n")
    info = {"version": services.kafka_version, "port": services.kafka_port, "started": time.time()}
    paths.info_file("kafka").write_text(json.dumps(info))
    return proc


# --- Redis ------------------------------------------------------------------------------------

_REDIS_CONF = """\
# Written by `streamd services up`; edit config.yaml (services.*) instead of this file.
bind 127.0.0.1
protected-mode yes
port {port}
daemonize no
dir {dir}
dbfilename dump.rdb
save 3600 1 300 100 60 10000
stop-writes-on-bgsave-error no
appendonly no
logfile ""
loglevel notice
"""


def _redis_server() -> str:
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    return path or ""


def redis_ready(port: int, timeout_s: float = 2.0) -> bool:
    """True when the Redis on 127.0.0.1:``port`` answers PING."""
    import redis

    try:
        client = redis.Redis(host=HOST, port=port, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def _start_redis(config: Config, paths: _Paths, log: Log) -> subprocess.Popen | None:
    port = config.services.redis_port
    if _live_pid(paths, "redis", "redis-server") is not None:
        return None
    if _port_open(port):
        raise ServicesError(
            f"port {HOST}:{port} is in use by {_who_listens(port)}, not by a Redis streamd started; "
            "stop it or choose another port (services.redis_port and redis.url)"
        )
    server = _redis_server()
    if not server:
        _apt_install("redis-server", log)
        server = _redis_server()
        if not server:
            raise ServicesError("redis-server is still not on PATH after installing it")
    paths.redis.mkdir(parents=True, exist_ok=True)
    conf = paths.redis / "redis.conf"
    conf.write_text(_REDIS_CONF.format(port=port, dir=paths.redis))
    version = subprocess.run([server, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"v=(\S+)", version)
    log(f"starting Redis on {HOST}:{port} ...")
    proc = _spawn([server, str(conf)], paths.redis, paths.redis / "redis.log")
    paths.pid_file("redis").write_text(f"{proc.pid}\n")
    info = {"version": match.group(1) if match else "?", "port": port, "started": time.time()}
    paths.info_file("redis").write_text(json.dumps(info))
    return proc


# --- up / down / status -----------------------------------------------------------------------


def up(config: Config, log: Log = print) -> list[ServiceStatus]:
    """Start whatever of Kafka and Redis is not running and wait until both answer.

    Raises :class:`ServicesError` naming what is missing, or, when a server does not come up
    within ``services.start_timeout_s``, with the tail of its log.
    """
    paths = _Paths(state_dir(config))
    services = config.services
    with _locked(paths):
        started = {"kafka": _start_kafka(config, paths, log), "redis": _start_redis(config, paths, log)}
        for name, proc in started.items():
            if proc is None:
                log(f"{name} already running (pid {_live_pid(paths, name, _MARKERS[name])})")
        checks = {
            "kafka": lambda: kafka_ready(f"{HOST}:{services.kafka_port}"),
            "redis": lambda: redis_ready(services.redis_port),
        }
        logs = {"kafka": paths.kafka_logs / "kafka.out", "redis": paths.redis / "redis.log"}
        deadline = time.monotonic() + services.start_timeout_s
        waiting = set(checks)
        while waiting:
            for name in sorted(waiting):
                proc = started[name]
                if proc is not None and proc.poll() is not None:
                    raise ServicesError(
                        f"{name} exited with status {proc.returncode} while starting; "
                        f"last lines of {logs[name]}:\n{_tail(logs[name])}"
                    )
                if proc is None and _live_pid(paths, name, _MARKERS[name]) is None:
                    raise ServicesError(f"{name} stopped while we waited for it; see {logs[name]}")
                if checks[name]():
                    waiting.discard(name)
                    if proc is not None:
                        log(f"{name} is up (pid {proc.pid})")
            if waiting and time.monotonic() > deadline:
                name = sorted(waiting)[0]
                raise ServicesError(
                    f"{name} did not answer within services.start_timeout_s={services.start_timeout_s:g} s; "
                    f"last lines of {logs[name]}:\n{_tail(logs[name])}"
                )
            if waiting:
                time.sleep(0.25)
    return status(config)


def _stop(pid: int, name: str, timeout_s: float, log: Log) -> None:
    """SIGTERM, wait up to ``timeout_s`` for a clean exit, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    log(f"{name} (pid {pid}) did not stop within {timeout_s:g} s; killing it")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state != "Z":
        return True
    try:  # a zombie: if it is our child (started in this process), reap it
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False  # someone else's child: it has exited
    return reaped == 0  # a multi-threaded child is reapable only once all its threads are gone


def down(config: Config, log: Log = print, timeout_s: float = 60.0) -> None:
    """Stop the Kafka and Redis that `up` started (gracefully: SIGTERM, then wait)."""
    paths = _Paths(state_dir(config))
    with _locked(paths):
        for name in ("kafka", "redis"):
            pid = _live_pid(paths, name, _MARKERS[name])
            if pid is None:
                log(f"{name} is not running")
            else:
                log(f"stopping {name} (pid {pid}) ...")
                _stop(pid, name, timeout_s, log)
                log(f"{name} stopped")
            paths.pid_file(name).unlink(missing_ok=True)


def status(config: Config) -> list[ServiceStatus]:
    """What runs where: pid, address, version, readiness, data folder and its disk use."""
    paths = _Paths(state_dir(config))
    services = config.services
    out = []

    pid = _live_pid(paths, "kafka", _MARKERS["kafka"])
    info = _read_info(paths, "kafka")
    version = info.get("version", services.kafka_version)
    ready = pid is not None and kafka_ready(f"{HOST}:{services.kafka_port}")
    jars = _disk_usage(paths.kafka_libs(version)) + _disk_usage(paths.m2)
    out.append(
        ServiceStatus(
            name="kafka",
            running=pid is not None,
            ready=ready,
            pid=pid,
            address=f"{HOST}:{info.get('port', services.kafka_port)}",
            version=version,
            data_dir=paths.kafka_data,
            disk_bytes=_disk_usage(paths.kafka_data),
            detail=f"jars + maven cache {jars / 1e6:.0f} MB; logs {paths.kafka_logs}",
        )
    )

    pid = _live_pid(paths, "redis", _MARKERS["redis"])
    info = _read_info(paths, "redis")
    detail = f"log {paths.redis / 'redis.log'}"
    ready = pid is not None and redis_ready(services.redis_port)
    if ready:
        import redis

        with contextlib.suppress(redis.RedisError, OSError):
            client = redis.Redis(host=HOST, port=services.redis_port, socket_timeout=2)
            memory = client.info("memory").get("used_memory_human", "?")
            detail = f"{client.dbsize()} keys in db 0, memory {memory}; " + detail
            client.close()
    out.append(
        ServiceStatus(
            name="redis",
            running=pid is not None,
            ready=ready,
            pid=pid,
            address=f"{HOST}:{info.get('port', services.redis_port)}",
            version=info.get("version", "?"),
            data_dir=paths.redis,
            disk_bytes=_disk_usage(paths.redis),
            detail=detail,
        )
    )
    return out
