"""Redis round trip against the real local server."""

from __future__ import annotations

import numpy as np


def test_redis_round_trip_bytes_hash_and_pipeline(redis_client):
    key = redis_client.prefix + "codes"
    codes = np.random.default_rng(0).integers(0, 256, size=(100, 8), dtype=np.uint8)
    redis_client.set(key, codes.tobytes())
    assert np.array_equal(np.frombuffer(redis_client.get(key), dtype=np.uint8).reshape(100, 8), codes)

    meta = redis_client.prefix + "meta"
    redis_client.hset(meta, mapping={"track": "a__b", "offset_s": "12.5"})
    assert redis_client.hgetall(meta) == {b"track": b"a__b", b"offset_s": b"12.5"}

    with redis_client.pipeline() as pipe:
        for i in range(10):
            pipe.rpush(redis_client.prefix + "list", i)
        pipe.execute()
    assert [int(v) for v in redis_client.lrange(redis_client.prefix + "list", 0, -1)] == list(range(10))
