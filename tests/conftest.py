"""Shared test fixtures: the real local Kafka and Redis, unique names, the dev corpus.

Tests that need Kafka or Redis use the servers started by `streamd services up` (``make test``
starts them). When they are not reachable the fixtures FAIL with a message saying how to start
them; they never skip, so a green run always means the real servers were exercised.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamd.config import Config, load_config

CORPUS_DIR = Path(os.environ.get("STREAMD_CORPUS", "~/.cache/streamd/corpus")).expanduser()


@pytest.fixture(scope="session")
def config() -> Config:
    """The configuration the tests run with: config.yaml + STREAMD_* env, as for the CLI."""
    return load_config()


@pytest.fixture(scope="session")
def kafka_bootstrap(config: Config) -> str:
    """``host:port`` of a Kafka broker that answers metadata requests."""
    from streamd.services import kafka_ready

    bootstrap = config.kafka.bootstrap_servers
    if not kafka_ready(bootstrap.split(",")[0].strip(), timeout_s=10):
        pytest.fail(
            f"Kafka is not reachable at {bootstrap}: start the local stack with `streamd services up` "
            "(or `make services-up`); `make test` does this for you",
            pytrace=False,
        )
    return bootstrap


@pytest.fixture(scope="session")
def redis_url(config: Config) -> str:
    """URL of a Redis server that answers PING."""
    import redis

    url = config.redis.url
    try:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        client.ping()
        client.close()
    except (redis.RedisError, OSError) as exc:
        pytest.fail(
            f"Redis is not reachable at {url} ({exc}): start the local stack with `streamd services up` "
            "(or `make services-up`); `make test` does this for you",
            pytrace=False,
        )
    return url


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Make names no other test (or earlier run) uses: ``unique("topic")`` → ``test.topic.<test>.<hex>``.

    Use it for Kafka topics, consumer groups, stream ids and Redis key prefixes, so tests can run
    against the shared servers in any order and in parallel.
    """
    test = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:60].strip("-")

    def make(kind: str = "x") -> str:
        return f"test.{kind}.{test}.{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture
def kafka_topic(
    config: Config, kafka_bootstrap: str, unique: Callable[[str], str]
) -> Iterator[Callable[..., str]]:
    """Factory: ``kafka_topic(partitions=1)`` creates a fresh topic, deleted after the test."""
    from streamd.kafka_io import delete_topics, ensure_topics

    created: list[str] = []

    def make(partitions: int = 1, name: str | None = None) -> str:
        topic = name or unique("topic")
        ensure_topics(config, {topic: partitions})
        created.append(topic)
        return topic

    yield make
    if created:
        delete_topics(config, created)


@pytest.fixture
def redis_client(redis_url: str, unique: Callable[[str], str]) -> Iterator:
    """A Redis client plus a unique key prefix (``redis_client.prefix``); its keys are deleted after."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.prefix = unique("redis") + ":"
    yield client
    keys = list(client.scan_iter(match=client.prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The dev corpus of real music (``make corpus`` builds it; ``make test`` does so when absent)."""
    if not (CORPUS_DIR / "manifest.csv").exists():
        pytest.fail(
            f"the dev corpus is missing at {CORPUS_DIR}: build it with `make corpus` "
            "(bash ../shared/corpus/build_corpus.sh --set dev --out ~/.cache/streamd/corpus)",
            pytrace=False,
        )
    return CORPUS_DIR
