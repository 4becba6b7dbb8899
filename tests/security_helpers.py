"""Private, locked-down servers for the security tests: a throwaway CA, Redis with TLS + ACL users,
Kafka with a SASL_SSL (SCRAM-SHA-512) listener.

Everything lives in a temporary folder and on free ports, apart from the shared local stack:
the CA and server certificate come from the ``openssl`` CLI, Redis is the Debian ``redis-server``
and Kafka runs from the jars ``streamd services up`` already resolved into ``.local``.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from streamd.config import load_config
from streamd.services import DEPLOY_DIR, _java, _new_cluster_id, ensure_kafka_jars

HOST = "127.0.0.1"

# ACL users of the private Redis. The daemon's user reads streamd keys only (plus what a client
# needs to connect); the indexer writes them (scripts included); nobody else gets in.
REDIS_USERS = {
    "daemon": ("daemon-pw-3f9a", "~streamd:* resetchannels -@all +@read +ping +select"),
    "indexer": ("indexer-pw-77c1", "~streamd:* resetchannels -@all +@read +@write +@scripting +ping +select"),
}
KAFKA_ADMIN = ("admin", "admin-pw-1d2e")
KAFKA_USER = ("alice", "alice-scram-pw-5b6c")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA certificate clients trust
    cert: Path  # the server certificate (CN localhost, SAN localhost + 127.0.0.1), signed by the CA
    key: Path
    keystore: Path  # cert + key as PKCS#12 for Kafka
    keystore_password: str


def make_certs(folder: Path) -> Certs:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost, valid for a day."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=streamd test CA",
            "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
            "-extfile", "san.ext", "-out", "server.pem")  # fmt: skip
    password = "keystore-pw"
    openssl("pkcs12", "-export", "-in", "server.pem", "-inkey", "server.key", "-certfile", "ca.pem",
            "-passout", f"pass:{password}", "-out", "server.p12")  # fmt: skip
    return Certs(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "server.p12", password)


def _wait(check, timeout_s: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up in {timeout_s} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# --- Redis --------------------------------------------------------------------------------------


@dataclass
class TlsRedis:
    proc: subprocess.Popen
    port: int
    certs: Certs
    admin_password: str

    @property
    def url(self) -> str:
        """The ``rediss://`` URL (credentials go in redis.username / redis.password)."""
        return f"rediss://{HOST}:{self.port}/0"


def start_tls_redis(folder: Path, certs: Certs) -> TlsRedis:
    """redis-server with only a TLS port, no default user, and the users of :data:`REDIS_USERS`."""
    port = free_port()
    admin_password = "admin-pw-" + os.urandom(4).hex()
    users = [f"user {name} on >{password} {rules}" for name, (password, rules) in REDIS_USERS.items()]
    conf = folder / "redis.conf"
    conf.write_text("\n".join([
        f"bind {HOST}", "port 0", f"tls-port {port}", f"tls-cert-file {certs.cert}", f"tls-key-file {certs.key}",
        f"tls-ca-cert-file {certs.ca}", "tls-auth-clients no", f"dir {folder}", "save \"\"", "appendonly no",
        "user default off", f"user admin on >{admin_password} ~* &* +@all", *users, "",
    ]))  # fmt: skip
    log = folder / "redis.log"
    proc = subprocess.Popen(["redis-server", str(conf)], stdout=open(log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
                            start_new_session=True)  # fmt: skip
    server = TlsRedis(proc, port, certs, admin_password)

    def ready() -> bool:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            return False

    _wait(ready, 20, "redis-server (TLS)", proc, log)
    return server


# --- Kafka --------------------------------------------------------------------------------------


@dataclass
class SaslKafka:
    proc: subprocess.Popen
    port: int  # SASL_SSL listener for clients
    certs: Certs
    folder: Path

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def overrides(self, user: tuple[str, str] = KAFKA_USER) -> dict[str, str]:
        """Config overrides (dotted keys) of a client that logs in as ``user``."""
        return {"kafka.bootstrap_servers": self.bootstrap, "kafka.security_protocol": "SASL_SSL",
                "kafka.sasl_mechanism": "SCRAM-SHA-512", "kafka.sasl_username": user[0],
                "kafka.sasl_password": user[1], "kafka.ssl_cafile": str(self.certs.ca)}  # fmt: skip


def start_sasl_kafka(folder: Path, certs: Certs, timeout_s: float = 120.0) -> SaslKafka:
    """A one-node KRaft broker whose only client listener is SASL_SSL with SCRAM-SHA-512 users
    created at format time (the internal and controller listeners are plaintext on 127.0.0.1)."""
    libs = ensure_kafka_jars(load_config())
    java = _java()
    client, internal, controller = free_port(), free_port(), free_port()
    data = folder / "data"
    props = folder / "server.properties"
    props.write_text("\n".join([
        "process.roles=broker,controller", "node.id=1", f"controller.quorum.voters=1@{HOST}:{controller}",
        f"listeners=SASL_SSL://{HOST}:{client},INTERNAL://{HOST}:{internal},CONTROLLER://{HOST}:{controller}",
        f"advertised.listeners=SASL_SSL://{HOST}:{client},INTERNAL://{HOST}:{internal}",
        "listener.security.protocol.map=SASL_SSL:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names=CONTROLLER", "inter.broker.listener.name=INTERNAL",
        "sasl.enabled.mechanisms=SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;",
        f"ssl.keystore.location={certs.keystore}", "ssl.keystore.type=PKCS12",
        f"ssl.keystore.password={certs.keystore_password}", f"ssl.key.password={certs.keystore_password}",
        f"super.users=User:{KAFKA_ADMIN[0]}", f"log.dirs={data}",
        "offsets.topic.replication.factor=1", "offsets.topic.num.partitions=1", "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1", "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1", "group.initial.rebalance.delay.ms=0", "num.partitions=1",
        "message.max.bytes=8388608", "num.network.threads=2", "num.io.threads=2", "",
    ]))  # fmt: skip
    scram = [arg for name, password in (KAFKA_ADMIN, KAFKA_USER)
             for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")]  # fmt: skip
    subprocess.run([java, "-Xmx256m", "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format", "-t", _new_cluster_id(),
                    "-c", str(props), *scram], check=True, capture_output=True, timeout=120)  # fmt: skip
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    log = logs / "kafka.out"
    cmd = [java, "-Xms256m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
           f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'log4j2.xml'}", f"-Dkafka.logs.dir={logs}",
           "-cp", f"{libs}/*", "kafka.Kafka", str(props)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115
    server = SaslKafka(proc, client, certs, folder)

    def tls_answers() -> bool:
        context = ssl.create_default_context(cafile=str(certs.ca))
        try:
            with socket.create_connection((HOST, client), timeout=1) as raw, context.wrap_socket(raw, server_hostname=HOST):
                return True
        except OSError:
            return False

    try:
        _wait(tls_answers, timeout_s, "Kafka (SASL_SSL)", proc, log)
    except Exception:
        stop(proc)
        raise
    return server
