"""Kafka clients built from ``Config.kafka``: producer, consumer, admin, topic creation.

Every client streamd makes goes through this module, so that connection and security settings
(TLS, SASL) are applied in one place. Two kafka-python 3.x facts shape it (measured, see
docs/protocol.md): the producer has no ``buffer_memory`` and queues without bound, and
``flush()`` does not raise when the broker rejects a record. :class:`BoundedProducer` therefore
keeps the futures of the records in flight, bounds them by count and bytes, and raises
:class:`KafkaSendError` for the first record that failed.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError

from streamd.config import Config, ConfigError, KafkaConfig
from streamd.errors import StreamdError

log = logging.getLogger(__name__)

# A 0.5 s chunk of 48 kHz stereo f32le is 384 KB; the local broker accepts up to 8 MB per record.
MAX_RECORD_BYTES = 8 * 1024 * 1024


class KafkaSendError(StreamdError):
    """A record could not be delivered to Kafka (the broker rejected it or did not answer)."""


class KafkaUnavailableError(StreamdError):
    """No broker answered at ``kafka.bootstrap_servers``."""


class _BootstrapLog(logging.Handler):
    """Keeps kafka-python's warnings while a client bootstraps: the only place that says *why* it
    failed (it raises a bare timeout, whether the broker is down or refused our login)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _bootstrap_failure(kafka: KafkaConfig, messages: list[str], exc: Exception) -> str:
    text = "\n".join(messages)
    servers = kafka.bootstrap_servers
    if "SaslAuthenticationFailed" in text or "Authentication failed" in text:
        return (f"the Kafka broker at {servers} refused the SASL login of user {kafka.sasl_username!r}: authentication "
                f"failed (check kafka.sasl_username, kafka.sasl_password, kafka.sasl_mechanism={kafka.sasl_mechanism})")
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return (f"the TLS certificate of the Kafka broker at {servers} is not trusted: set kafka.ssl_cafile to the CA "
                "that signed it")
    return (f"no Kafka broker answers at {servers} (kafka.bootstrap_servers, kafka.security_protocol="
            f"{kafka.security_protocol}); for the local one run `streamd services up` ({exc})")


def _connect(factory: Any, config: Config | KafkaConfig, *args: Any, **options: Any) -> Any:
    watcher = _BootstrapLog()
    kafka_logger = logging.getLogger("kafka")
    kafka_logger.addHandler(watcher)
    try:
        return factory(*args, **options)
    except KafkaTimeoutError as exc:  # kafka-python 3: "Unable to bootstrap from ..."
        raise connection_failure(config, watcher.messages, exc) from None
    finally:
        kafka_logger.removeHandler(watcher)


def _kafka_section(config: Config | KafkaConfig) -> KafkaConfig:
    return config.kafka if isinstance(config, Config) else config


def client_options(config: Config | KafkaConfig) -> dict[str, Any]:
    """Connection and security options shared by every kafka-python client."""
    kafka = _kafka_section(config)
    options: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in kafka.bootstrap_servers.split(",") if s.strip()],
        "security_protocol": kafka.security_protocol,
        "bootstrap_timeout_ms": 10_000,
    }
    if kafka.security_protocol.startswith("SASL"):
        if not kafka.sasl_mechanism:
            raise ConfigError(
                f"kafka.sasl_mechanism: required when kafka.security_protocol is {kafka.security_protocol}; "
                "allowed: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"
            )
        options.update(
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=kafka.sasl_password,
        )
    if kafka.security_protocol.endswith("SSL"):
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(kafka, key):
                options[key] = getattr(kafka, key)
    return options


LIBRDKAFKA_SECURITY = {"ssl_cafile": "ssl.ca.location", "ssl_certfile": "ssl.certificate.location",
                       "ssl_keyfile": "ssl.key.location"}


def librdkafka_options(config: Config | KafkaConfig) -> dict[str, Any]:
    """The same connection and security settings as :func:`client_options`, for a librdkafka
    (confluent-kafka) client: the daemon's audio consumer (:mod:`streamd.daemon.source`)."""
    kafka = _kafka_section(config)
    options = client_options(kafka)  # validates the SASL settings
    out: dict[str, Any] = {"bootstrap.servers": ",".join(options["bootstrap_servers"]),
                           "security.protocol": kafka.security_protocol}  # fmt: skip
    if "sasl_mechanism" in options:
        out.update({"sasl.mechanism": kafka.sasl_mechanism, "sasl.username": kafka.sasl_username or "",
                    "sasl.password": kafka.sasl_password or ""})  # fmt: skip
    out.update({LIBRDKAFKA_SECURITY[key]: value for key, value in options.items() if key in LIBRDKAFKA_SECURITY})
    return out


def connection_failure(config: Config | KafkaConfig, messages: list[str], exc: Exception) -> KafkaUnavailableError:
    """A client could not reach or log in to the brokers: say why, from what the client logged."""
    return KafkaUnavailableError(_bootstrap_failure(_kafka_section(config), messages, exc))


def make_producer(config: Config | KafkaConfig, **overrides: Any) -> KafkaProducer:
    """A producer tuned for PCM chunks: 1 MB batches (4x the throughput of the 16 KB default)."""
    options = client_options(config)
    options.update(
        acks=1,
        linger_ms=5,
        batch_size=1024 * 1024,
        max_request_size=MAX_RECORD_BYTES,
        request_timeout_ms=30_000,
        client_id="streamd-producer",
    )
    options.update(overrides)
    return _connect(KafkaProducer, config, **options)


def make_consumer(
    config: Config | KafkaConfig, *topics: str, group_id: str | None = None, **overrides: Any
) -> KafkaConsumer:
    """A consumer with manual commits, starting at the earliest offset of partitions it has none for.

    ``group_id`` defaults to ``kafka.group_id``; pass ``group_id=""`` for a consumer without a group
    (``assign``/``seek`` only).
    """
    kafka = _kafka_section(config)
    options = client_options(config)
    options.update(
        group_id=(group_id if group_id is not None else kafka.group_id) or None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=MAX_RECORD_BYTES,
        fetch_max_bytes=64 * 1024 * 1024,
        client_id="streamd-consumer",
    )
    options.update(overrides)
    return _connect(KafkaConsumer, config, *topics, **options)


def make_admin(config: Config | KafkaConfig, **overrides: Any) -> KafkaAdminClient:
    options = client_options(config)
    options.update(client_id="streamd-admin", request_timeout_ms=30_000)
    options.update(overrides)
    return _connect(KafkaAdminClient, config, **options)


def ensure_topics(
    config: Config | KafkaConfig,
    topics: Mapping[str, int],
    topic_configs: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the topics (name → partition count) that do not exist yet; return the ones created.

    Waits until every topic has a leader for every partition, so producing right after works.
    Existing topics are left as they are (their partition count is not changed).
    """
    admin = make_admin(config)
    try:
        existing = set(admin.list_topics())
        missing = {name: n for name, n in topics.items() if name not in existing}
        created = []
        for name, partitions in missing.items():
            spec = {name: {"num_partitions": partitions, "configs": dict(topic_configs or {})}}
            try:
                admin.create_topics(spec, timeout_ms=int(timeout_s * 1000))
                created.append(name)
            except TopicAlreadyExistsError:  # created concurrently by someone else
                pass
        admin.wait_for_topics(list(topics), timeout_ms=int(timeout_s * 1000))
        return created
    finally:
        admin.close()


def delete_topics(config: Config | KafkaConfig, topics: Iterable[str]) -> None:
    """Delete topics, ignoring ones that do not exist (tests clean up after themselves)."""
    admin = make_admin(config)
    try:
        existing = set(admin.list_topics())
        doomed = [t for t in topics if t in existing]
        if doomed:
            admin.delete_topics(doomed, raise_errors=False)
    finally:
        admin.close()


def wait_for_assignment(consumer: KafkaConsumer, timeout_s: float = 30.0) -> set:
    """Poll until the group coordinator has assigned partitions to ``consumer``; return them.

    On a fresh broker the first join waits for ``__consumer_offsets`` to be created; this waits for
    that instead of sleeping. Records fetched while waiting are not lost: the consumer's position is
    moved back, so the next ``poll`` returns them again.
    """
    deadline = time.monotonic() + timeout_s
    while not consumer.assignment():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no partitions assigned within {timeout_s:g} s")
        polled = consumer.poll(timeout_ms=200, max_records=1)
        for tp, records in polled.items():
            consumer.seek(tp, records[0].offset)
    return set(consumer.assignment())


class BoundedProducer:
    """A producer whose in-flight records are bounded and whose failures raise.

    ``send`` blocks (waiting on the oldest futures) once more than ``max_pending`` records or
    ``max_pending_bytes`` of payload are unacknowledged, so memory stays bounded however fast the
    caller produces. The first failed record raises :class:`KafkaSendError` from the next ``send``,
    ``flush`` or ``close``.
    """

    def __init__(
        self,
        config: Config | KafkaConfig,
        max_pending: int = 1000,
        max_pending_bytes: int = 64 * 1024 * 1024,
        producer: KafkaProducer | None = None,
        **producer_overrides: Any,
    ):
        self.producer = producer or make_producer(config, **producer_overrides)
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self._pending: collections.deque[tuple[Any, int, str]] = collections.deque()
        self._pending_bytes = 0
        self.records_sent = 0
        self.bytes_sent = 0

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        """Queue one record; blocks while too much is in flight; raises for an earlier failure."""
        self._reap(block=False)
        while self._pending and (
            len(self._pending) >= self.max_pending
            or self._pending_bytes + len(value) > self.max_pending_bytes
        ):
            self._wait_oldest()
        try:
            future = self.producer.send(
                topic, value=value, key=key, headers=list(headers or []), timestamp_ms=timestamp_ms,
                partition=partition,
            )  # fmt: skip
        except KafkaError as exc:
            raise KafkaSendError(f"cannot send to {topic}: {exc}") from exc
        self._pending.append((future, len(value), topic))
        self._pending_bytes += len(value)

    def _reap(self, block: bool) -> None:
        while self._pending and (block or self._pending[0][0].is_done):
            self._wait_oldest()

    def _wait_oldest(self, timeout_s: float = 120.0) -> None:
        future, size, topic = self._pending.popleft()
        self._pending_bytes -= size
        try:
            future.get(timeout=timeout_s)
        except KafkaError as exc:
            raise KafkaSendError(f"record to {topic} was not delivered: {exc}") from exc
        self.records_sent += 1
        self.bytes_sent += size

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self, timeout_s: float | None = None) -> None:
        """Send everything queued and wait for every acknowledgement; raise for the first failure."""
        self.producer.flush(timeout=timeout_s)
        self._reap(block=True)

    def close(self, timeout_s: float = 30.0) -> None:
        try:
            self.flush(timeout_s)
        finally:
            self.producer.close(timeout=timeout_s)

    def __enter__(self) -> BoundedProducer:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:  # do not mask the original error with a flush failure
            try:
                self.close()
            except Exception:
                log.exception("closing the producer after an error failed")
