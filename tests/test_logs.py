"""Structured logs: JSON lines with extra fields, text for people, secrets never written."""

from __future__ import annotations

import io
import json
import logging

import pytest

from streamd.config import load_config
from streamd.logs import MASK, Redactor, configure_logging, secrets_of

SASL = 'kafka-s3cret"\\pw'  # quotes and backslashes: the JSON-escaped form must not leak either
REDIS = "redis-pa55"
URL_PASSWORD = "in-url-pw"


@pytest.fixture
def config():
    return load_config(
        overrides={
            "kafka.sasl_password": SASL,
            "redis.password": REDIS,
            "redis.url": f"rediss://user:{URL_PASSWORD}@cache.example:6380/0",
        },
        environ={},
    )


@pytest.fixture
def capture():
    stream = io.StringIO()
    yield stream
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "streamd"]:
        root.removeHandler(handler)


def log_everything(config) -> None:
    log = logging.getLogger("streamd.test")
    log.info("connecting to %s as %s", config.redis.url, config.kafka.sasl_password,
             extra={"stream_id": "radio-1", "lag": 3, "settings": {"password": config.redis.password},
                    "secrets": [SASL, REDIS]})  # fmt: skip
    try:
        raise ConnectionError(f"auth failed for {config.kafka.sasl_password} / {config.redis.password}")
    except ConnectionError:
        log.exception("kafka login failed")
    log.warning("config", extra={"config": config.redacted(), "raw_url": config.redis.url})


def assert_no_secret(text: str) -> None:
    for secret in (SASL, REDIS, URL_PASSWORD, json.dumps(SASL)[1:-1]):
        assert secret not in text
    assert MASK in text


def test_json_lines_carry_fields_and_no_secrets(config, capture):
    configure_logging(config, stream=capture)
    log_everything(config)
    lines = capture.getvalue().splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    first = records[0]
    assert set(first) >= {"ts", "level", "logger", "msg"}
    assert first["ts"].endswith("Z") and first["level"] == "INFO" and first["logger"] == "streamd.test"
    assert first["stream_id"] == "radio-1" and first["lag"] == 3
    assert first["settings"] == {"password": MASK} and first["secrets"] == [MASK, MASK]
    assert first["msg"] == f"connecting to rediss://user:{MASK}@cache.example:6380/0 as {MASK}"
    assert records[1]["level"] == "ERROR" and "ConnectionError" in records[1]["exc"]
    assert_no_secret(capture.getvalue())


def test_text_mode_is_for_people_and_redacted_too(config, capture):
    configure_logging(config, fmt="text", stream=capture)
    log_everything(config)
    text = capture.getvalue()
    assert " INFO streamd.test: connecting to " in text and "stream_id=radio-1" in text
    assert "Traceback (most recent call last)" in text
    assert_no_secret(text)


def test_level_and_reconfiguration(config, capture):
    configure_logging(config, level="WARNING", stream=capture)
    configure_logging(config, level="WARNING", stream=capture)  # replaces, does not add a second handler
    logging.getLogger("streamd.test").info("hidden")
    logging.getLogger("kafka.conn").warning("shown once")
    logging.getLogger("kafka.net.selector").warning("Task ran for 0.150s (>0.100s threshold)")  # the GIL, not a bug
    logging.getLogger("kafka.net.selector").error("selector failed")
    text = capture.getvalue()
    assert text.count("shown once") == 1 and "hidden" not in text
    assert "threshold" not in text and "selector failed" in text


def test_secrets_come_from_the_config_and_urls_are_masked_anyway(config):
    assert set(secrets_of(config)) == {SASL, REDIS, URL_PASSWORD}
    assert secrets_of(load_config(environ={})) == []
    redact = Redactor()
    assert redact("redis://:hunter2@h:1/0 and amqp://u:p@q") == f"redis://:{MASK}@h:1/0 and amqp://u:{MASK}@q"
    assert redact("no secrets here: a:b@c") == "no secrets here: a:b@c"
