"""Structured logs: one JSON object per line for machines, or plain text for people; secrets never.

``configure_logging(config)`` installs one handler on the root logger (so library loggers such
as kafka-python's come out the same way) with either

- :class:`JsonFormatter`: ``{"ts": "2026-11-28T10:00:00.123Z", "level": "INFO", "logger":
  "streamd.daemon", "msg": "...", ...}`` — every ``extra={...}`` field of the call becomes a key,
  an exception becomes ``exc``; or
- :class:`TextFormatter`: ``2026-11-28T10:00:00.123Z INFO streamd.daemon: msg key=value ...``.

Both pass everything they write through a :class:`Redactor`: the values of the config's secret
fields (``kafka.sasl_password``, ``redis.password``, and any field marked ``secret``) and the
password part of any ``scheme://user:password@host`` URL are replaced by ``***`` — in the
message, its arguments, extra fields and tracebacks alike.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from streamd.config import Config

MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]+(?P<at>@)")
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_HANDLER_NAME = "streamd"


class Redactor:
    """Replaces known secret strings and URL passwords by ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return _URL_PASSWORD.sub(rf"\g<head>{MASK}\g<at>", text)


def secrets_of(config: Config) -> list[str]:
    """Every secret value in ``config``: fields marked ``secret`` and passwords inside URLs."""
    found: list[str] = []
    for section in dataclasses.fields(config):
        values = getattr(config, section.name)
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            if not isinstance(value, str) or not value:
                continue
            if f.metadata.get("secret"):
                found.append(value)
            elif "://" in value:
                try:
                    password = urlsplit(value).password
                except ValueError:
                    password = None
                if password:
                    found.append(password)
    return found


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_FIELDS and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, the call's extra fields, exc."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redact = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": self.redact(record.getMessage()),
        }
        for key, value in _extras(record).items():
            document.setdefault(key, self._clean(value))
        if record.exc_info:
            document["exc"] = self.redact(self.formatException(record.exc_info))
        if record.stack_info:
            document["stack"] = self.redact(self.formatStack(record.stack_info))
        return json.dumps(document, ensure_ascii=False)

    def _clean(self, value: Any) -> Any:
        """A JSON-able copy of an extra field with every string redacted."""
        if isinstance(value, str):
            return self.redact(value)
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, dict):
            return {self.redact(str(k)): self._clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self._clean(v) for v in value]
        return self.redact(str(value))


class TextFormatter(logging.Formatter):
    """``<ts> <LEVEL> <logger>: <msg> key=value ...`` with the traceback below, redacted."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redact = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        extras = " ".join(f"{k}={v!r}" if isinstance(v, str) and " " in v else f"{k}={v}"
                          for k, v in _extras(record).items())  # fmt: skip
        if extras:
            line = f"{line} {extras}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return self.redact(line)


def configure_logging(
    config: Config | None = None,
    *,
    fmt: str | None = None,
    level: str | None = None,
    secrets: Iterable[str] = (),
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send all logging to ``stream`` (stderr) as JSON or text, at the config's level, redacted.

    ``fmt``/``level`` default to ``config.daemon.log_format``/``log_level``. Calling it again
    replaces the handler it installed before (tests, reconfiguration) and leaves others alone.
    """
    fmt = fmt or (config.daemon.log_format if config else "json")
    level = level or (config.daemon.log_level if config else "INFO")
    redactor = Redactor([*(secrets_of(config) if config else []), *secrets])
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter(redactor) if fmt == "json" else TextFormatter(redactor))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # kafka-python warns when a step of its I/O thread took > 0.1 s, naming a livelock in a
    # coroutine; in streamd it is the main thread holding the GIL through a batch's inference
    # (a few a minute under 1 000 streams), expected and harmless.
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    return handler
