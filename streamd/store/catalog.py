"""The catalog in Redis: the source of truth that every daemon replica loads and follows.

Key schema (all keys of catalog ``C`` share the hash tag ``{C}``, so they live in one Redis Cluster
slot and every multi-key script below stays legal there):

===================================  ======  ==============================================================
key                                  type    content
===================================  ======  ==============================================================
``streamd:catalogs``                 set     names of all catalogs (a directory; not in any catalog's slot)
``streamd:{C}:meta``                 hash    name, epoch, version, generation, building, next_generation,
                                             created_at, updated_at
``streamd:{C}:changes``              stream  one entry per visible change: op (put|del|switch|drop),
                                             track, version, generation, epoch
``streamd:{C}:g<G>:meta``            hash    bits, hop_frames, model_version, tracks, codes, created_at
``streamd:{C}:g<G>:tracks``          set     track ids of generation G
``streamd:{C}:g<G>:codes:<id>``      string  the track's packed codes, n × K/8 bytes back to back
``streamd:{C}:g<G>:offsets:<id>``    string  n little-endian float32: track time (s) of each window's end
``streamd:{C}:g<G>:info:<id>``       hash    title, artist, duration_s, source_*, manifest fields...
``streamd:{C}:g<G>:peaks:<id>``      string  spectral peaks (streamd.peaks), little-endian int32 pairs
                                             [frame, mel]; absent for tracks indexed without them
===================================  ======  ==============================================================

``version`` counts visible changes; ``epoch`` is a random id fixed when the catalog is created (a
deleted and recreated catalog gets a new one). A generation is one complete build of the
catalog: ``generation`` is the one served, ``building`` the one a re-index is filling. Writing a
track (codes + offsets + info + counters + change entry) and deleting one are each one Lua
script, so atomic; switching to a rebuilt generation is one script too, after which the old
generation's keys are removed.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import redis

from streamd.config import ConfigError, RedisConfig
from streamd.errors import StreamdError
from streamd.store.codes import check_bits, check_packed, code_bytes

log = logging.getLogger(__name__)

REGISTRY_KEY = "streamd:catalogs"
STREAM_MAXLEN = 100_000
FETCH_BATCH = 256
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
INFO_SUMMARY_FIELDS = ("title", "artist", "duration_s")


class CatalogError(StreamdError):
    """A catalog operation cannot be done as asked (missing catalog, wrong model, bad name...)."""


class ModelMismatchError(CatalogError):
    """The catalog's served codes were made by another model (K, hop or weights) than this one."""


class StaleGenerationError(CatalogError):
    """The generation being written is neither served nor being built any more."""


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name or ""):
        raise CatalogError(
            f"invalid catalog name {name!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def connect(config: RedisConfig, *, decode_responses: bool = False) -> redis.Redis:
    """A Redis client for ``config`` (URL plus optional ACL user, password and CA file for TLS)."""
    kwargs: dict = {"socket_timeout": config.socket_timeout_s, "socket_connect_timeout": config.socket_timeout_s,
                    "decode_responses": decode_responses, "health_check_interval": 30}
    if config.username:
        kwargs["username"] = config.username
    if config.password:
        kwargs["password"] = config.password
    if config.ssl_ca_certs:
        if not config.url.startswith("rediss://"):
            raise ConfigError("redis.ssl_ca_certs is set but redis.url is not a TLS URL: use rediss://host:port/db")
        kwargs["ssl_ca_certs"] = config.ssl_ca_certs
    return redis.Redis.from_url(config.url, **kwargs)


@dataclass(frozen=True)
class Keys:
    """Key names of one catalog (see the module docstring)."""

    catalog: str

    @property
    def prefix(self) -> str:
        return f"streamd:{{{self.catalog}}}:"

    @property
    def meta(self) -> str:
        return self.prefix + "meta"

    @property
    def changes(self) -> str:
        return self.prefix + "changes"

    def generation_meta(self, generation: int) -> str:
        return f"{self.prefix}g{generation}:meta"

    def tracks(self, generation: int) -> str:
        return f"{self.prefix}g{generation}:tracks"

    def codes(self, generation: int, track_id: str) -> str:
        return f"{self.prefix}g{generation}:codes:{track_id}"

    def offsets(self, generation: int, track_id: str) -> str:
        return f"{self.prefix}g{generation}:offsets:{track_id}"

    def info(self, generation: int, track_id: str) -> str:
        return f"{self.prefix}g{generation}:info:{track_id}"

    def peaks(self, generation: int, track_id: str) -> str:
        return f"{self.prefix}g{generation}:peaks:{track_id}"

    def track_keys(self, generation: int, track_id: str) -> list[str]:
        return [self.codes(generation, track_id), self.offsets(generation, track_id), self.info(generation, track_id),
                self.peaks(generation, track_id)]


@dataclass(frozen=True)
class GenerationInfo:
    """What a generation's codes were made with, and how many there are."""

    generation: int
    bits: int
    hop_frames: int
    model_version: str
    tracks: int
    codes: int
    created_at: float

    def describe_model(self) -> str:
        return f"model {self.model_version!r} ({self.bits}-bit codes, hop {self.hop_frames} frames)"


@dataclass(frozen=True)
class CatalogInfo:
    name: str
    epoch: str
    version: int
    generation: int
    building: int | None
    created_at: float
    updated_at: float
    served: GenerationInfo | None
    rebuild: GenerationInfo | None = None


@dataclass
class Track:
    """One track as stored: packed codes ``(n, K // 8)``, offsets ``(n,)`` float32, metadata."""

    track_id: str
    codes: np.ndarray
    offsets: np.ndarray
    info: dict[str, str] = field(default_factory=dict)
    peaks: np.ndarray | None = None  # (N, 2) int32 [frame, mel] (streamd.peaks), None: not stored


@dataclass(frozen=True)
class Change:
    """One entry of the change stream."""

    entry_id: str
    op: str
    track: str
    version: int
    generation: int
    epoch: str

    @property
    def committed_at(self) -> float:
        """Unix time (Redis server clock) at which the change was written."""
        return int(self.entry_id.split("-")[0]) / 1000.0


_ENSURE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'epoch', ARGV[2], 'version', 0, 'generation', 1,
           'next_generation', 1, 'created_at', ARGV[6], 'updated_at', ARGV[6])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'bits', ARGV[3], 'hop_frames', ARGV[4], 'model_version', ARGV[5],
           'tracks', 0, 'codes', 0, 'created_at', ARGV[6])
return 1
"""

# KEYS: meta, changes, generation meta, tracks, codes, offsets, info, peaks
# ARGV: generation, track, codes, offsets, n_codes, maxlen, now, code_bytes, peaks ('' = none),
#       info field/value pairs...
_PUT = """
local m = redis.call('HMGET', KEYS[1], 'generation', 'building', 'epoch')
if m[1] ~= ARGV[1] and m[2] ~= ARGV[1] then
  return redis.error_reply('STALE generation ' .. ARGV[1] .. ' is neither served nor being built')
end
local old = math.floor(redis.call('STRLEN', KEYS[5]) / tonumber(ARGV[8]))
local added = redis.call('SADD', KEYS[4], ARGV[2])
redis.call('SET', KEYS[5], ARGV[3])
redis.call('SET', KEYS[6], ARGV[4])
redis.call('DEL', KEYS[7], KEYS[8])
if ARGV[9] ~= '' then redis.call('SET', KEYS[8], ARGV[9]) end
if #ARGV > 9 then redis.call('HSET', KEYS[7], unpack(ARGV, 10)) end
redis.call('HINCRBY', KEYS[3], 'tracks', added)
redis.call('HINCRBY', KEYS[3], 'codes', tonumber(ARGV[5]) - old)
if m[1] ~= ARGV[1] then return 0 end
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[7])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'op', 'put', 'track', ARGV[2], 'version', v,
           'generation', ARGV[1], 'epoch', m[3])
return v
"""

# KEYS: meta, changes, generation meta, tracks, codes, offsets, info, peaks
# ARGV: generation, track, maxlen, now, code_bytes
_DELETE = """
local m = redis.call('HMGET', KEYS[1], 'generation', 'epoch')
if m[1] ~= ARGV[1] then
  return redis.error_reply('STALE generation ' .. ARGV[1] .. ' is not served')
end
if redis.call('SREM', KEYS[4], ARGV[2]) == 0 then return 0 end
local old = math.floor(redis.call('STRLEN', KEYS[5]) / tonumber(ARGV[5]))
redis.call('DEL', KEYS[5], KEYS[6], KEYS[7], KEYS[8])
redis.call('HINCRBY', KEYS[3], 'tracks', -1)
redis.call('HINCRBY', KEYS[3], 'codes', -old)
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[4])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'op', 'del', 'track', ARGV[2], 'version', v,
           'generation', ARGV[1], 'epoch', m[2])
return v
"""

# KEYS: meta, new generation meta.  ARGV: generation, bits, hop, model_version, now
_BEGIN_REBUILD = """
local m = redis.call('HMGET', KEYS[1], 'next_generation', 'building')
if m[1] == false then return redis.error_reply('MISSING catalog does not exist') end
if m[2] ~= false then return redis.error_reply('BUSY generation ' .. m[2] .. ' is already being built') end
if tonumber(m[1]) + 1 ~= tonumber(ARGV[1]) then return redis.error_reply('RETRY generation counter moved') end
redis.call('HSET', KEYS[1], 'next_generation', ARGV[1], 'building', ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'bits', ARGV[2], 'hop_frames', ARGV[3], 'model_version', ARGV[4],
           'tracks', 0, 'codes', 0, 'created_at', ARGV[5])
return 1
"""

# KEYS: meta, changes.  ARGV: generation, maxlen, now
_SWITCH = """
local m = redis.call('HMGET', KEYS[1], 'building', 'generation', 'epoch')
if m[1] ~= ARGV[1] then return redis.error_reply('STALE generation ' .. ARGV[1] .. ' is not being built') end
redis.call('HSET', KEYS[1], 'generation', ARGV[1], 'updated_at', ARGV[3])
redis.call('HDEL', KEYS[1], 'building')
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'op', 'switch', 'track', '', 'version', v,
           'generation', ARGV[1], 'epoch', m[3])
return {v, tonumber(m[2])}
"""

# KEYS: meta.  ARGV: generation
_ABANDON = """
if redis.call('HGET', KEYS[1], 'building') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'building')
return 1
"""

# KEYS: meta, changes.  ARGV: maxlen
_DROP = """
local m = redis.call('HMGET', KEYS[1], 'epoch', 'generation', 'next_generation')
if m[1] == false then return false end
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'op', 'drop', 'track', '', 'version', v,
           'generation', m[2], 'epoch', m[1])
redis.call('DEL', KEYS[1])
return tonumber(m[3])
"""


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _decode_hash(raw: Mapping) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _script_error(exc: redis.ResponseError, catalog: str) -> CatalogError:
    message = str(exc)
    if message.startswith("STALE"):
        return StaleGenerationError(f"catalog {catalog!r}: {message[6:]} (it was rebuilt or deleted meanwhile)")
    return CatalogError(f"catalog {catalog!r}: {message}")


class Catalog:
    """Reads and writes one catalog. Cheap to create; holds no state besides the client."""

    def __init__(self, client: redis.Redis, name: str):
        self.client = client
        self.name = check_name(name)
        self.keys = Keys(self.name)
        self._ensure = client.register_script(_ENSURE)
        self._put = client.register_script(_PUT)
        self._delete = client.register_script(_DELETE)
        self._begin = client.register_script(_BEGIN_REBUILD)
        self._switch = client.register_script(_SWITCH)
        self._abandon = client.register_script(_ABANDON)
        self._drop = client.register_script(_DROP)

    # --- reading -------------------------------------------------------------------------

    def generation_info(self, generation: int) -> GenerationInfo | None:
        raw = _decode_hash(self.client.hgetall(self.keys.generation_meta(generation)))
        if not raw:
            return None
        return GenerationInfo(
            generation=generation, bits=int(raw["bits"]), hop_frames=int(raw["hop_frames"]),
            model_version=raw["model_version"], tracks=int(raw.get("tracks", 0)),
            codes=int(raw.get("codes", 0)), created_at=float(raw.get("created_at", 0.0)),
        )

    def info(self) -> CatalogInfo | None:
        """The catalog's state, or None if it does not exist."""
        raw = _decode_hash(self.client.hgetall(self.keys.meta))
        if not raw:
            return None
        generation = int(raw["generation"])
        building = int(raw["building"]) if raw.get("building") else None
        return CatalogInfo(
            name=raw.get("name", self.name), epoch=raw["epoch"], version=int(raw["version"]),
            generation=generation, building=building, created_at=float(raw.get("created_at", 0)),
            updated_at=float(raw.get("updated_at", 0)), served=self.generation_info(generation),
            rebuild=self.generation_info(building) if building else None,
        )

    def head(self) -> tuple[str | None, int, int]:
        """(epoch, version, generation) in one round trip; (None, 0, 0) when the catalog is absent."""
        epoch, version, generation = self.client.hmget(self.keys.meta, "epoch", "version", "generation")
        if epoch is None:
            return None, 0, 0
        return _text(epoch), int(version), int(generation)

    def track_ids(self, generation: int) -> list[str]:
        return sorted(_text(t) for t in self.client.sscan_iter(self.keys.tracks(generation), count=1000))

    def stored_sources(self, generation: int, track_ids: Iterable[str]) -> dict[str, dict[str, str]]:
        """The ``source_*`` fields of the given tracks (those that exist), for unchanged-file checks,
        and ``has_peaks`` ("1"/"0": whether the track's spectral peaks are stored)."""
        ids = list(track_ids)
        found: dict[str, dict[str, str]] = {}
        fields = ("source_path", "source_size", "source_mtime_ns", "source_sha256")
        for start in range(0, len(ids), FETCH_BATCH):
            batch = ids[start:start + FETCH_BATCH]
            pipe = self.client.pipeline(transaction=False)
            for track_id in batch:
                pipe.hmget(self.keys.info(generation, track_id), *fields)
                pipe.exists(self.keys.peaks(generation, track_id))
            replies = pipe.execute()
            for track_id, values, has_peaks in zip(batch, replies[::2], replies[1::2], strict=True):
                if values[0] is not None:
                    found[track_id] = dict(zip(fields, (_text(v) or "" for v in values), strict=True))
                    found[track_id]["has_peaks"] = "1" if has_peaks else "0"
        return found

    def read_tracks(self, generation: int, track_ids: Iterable[str], bits: int, *,
                    info_fields: tuple[str, ...] | None = INFO_SUMMARY_FIELDS) -> Iterator[Track]:
        """Yield the tracks that exist among ``track_ids`` (pipelined, FETCH_BATCH per round trip).

        ``info_fields``: which metadata fields to read (None: all of them).
        """
        width = code_bytes(bits)
        ids = list(track_ids)
        for start in range(0, len(ids), FETCH_BATCH):
            batch = ids[start:start + FETCH_BATCH]
            pipe = self.client.pipeline(transaction=False)
            for track_id in batch:
                pipe.get(self.keys.codes(generation, track_id))
                pipe.get(self.keys.offsets(generation, track_id))
                pipe.get(self.keys.peaks(generation, track_id))
                if info_fields is None:
                    pipe.hgetall(self.keys.info(generation, track_id))
                else:
                    pipe.hmget(self.keys.info(generation, track_id), *info_fields)
            replies = pipe.execute()
            for i, track_id in enumerate(batch):
                codes, offsets, peaks, info = replies[4 * i: 4 * i + 4]
                if codes is None or offsets is None:
                    continue  # deleted meanwhile
                codes_arr = np.frombuffer(codes, dtype=np.uint8).reshape(-1, width)
                offsets_arr = np.frombuffer(offsets, dtype="<f4").astype(np.float32)
                if len(offsets_arr) != len(codes_arr):
                    raise CatalogError(f"catalog {self.name!r}: track {track_id!r} has {len(codes_arr)} codes "
                                       f"but {len(offsets_arr)} offsets")
                if info_fields is None:
                    info_dict = _decode_hash(info)
                else:
                    info_dict = {f: _text(v) for f, v in zip(info_fields, info, strict=True) if v is not None}
                peaks_arr = None  # missing, or not whole [frame, mel] pairs: no peak check for the track
                if peaks is not None and len(peaks) % 8 == 0:
                    peaks_arr = np.frombuffer(peaks, dtype="<i4").reshape(-1, 2).astype(np.int32)
                elif peaks is not None:
                    log.warning("catalog %r: track %r has a corrupt peaks value (%d bytes, not whole [frame, mel] "
                                "pairs); it is read without peaks", self.name, track_id, len(peaks))
                yield Track(track_id, codes_arr, offsets_arr, info_dict, peaks_arr)

    def track_info(self, generation: int, track_id: str) -> dict[str, str]:
        return _decode_hash(self.client.hgetall(self.keys.info(generation, track_id)))

    # --- the change stream ----------------------------------------------------------------

    def last_change_id(self) -> str:
        """ID of the newest change entry, or ``0-0`` when there is none."""
        newest = self.client.xrevrange(self.keys.changes, count=1)
        return _text(newest[0][0]) if newest else "0-0"

    def change_exists(self, entry_id: str) -> bool:
        return bool(self.client.xrange(self.keys.changes, min=entry_id, max=entry_id, count=1))

    def read_changes(self, after_id: str, *, count: int = 1000, block_ms: int | None = None) -> list[Change]:
        """Changes after ``after_id`` (waiting up to ``block_ms`` for the first one when given)."""
        reply = self.client.xread({self.keys.changes: after_id}, count=count, block=block_ms)
        changes = []
        for _stream, entries in reply or []:
            for entry_id, raw in entries:
                f = _decode_hash(raw)
                changes.append(Change(_text(entry_id), f.get("op", ""), f.get("track", ""),
                                      int(f.get("version", 0)), int(f.get("generation", 0)), f.get("epoch", "")))
        return changes

    # --- writing -------------------------------------------------------------------------

    def ensure(self, bits: int, hop_frames: int, model_version: str) -> CatalogInfo:
        """Create the catalog (empty, generation 1) if it does not exist; return its state."""
        check_bits(bits)
        created = self._ensure(keys=[self.keys.meta, self.keys.generation_meta(1)],
                               args=[self.name, uuid.uuid4().hex, bits, hop_frames, model_version, time.time()])
        if created:
            self.client.sadd(REGISTRY_KEY, self.name)
        info = self.info()
        assert info is not None
        return info

    def put_track(self, generation: int, track: Track, bits: int) -> int:
        """Write (or replace) one track atomically. Returns the new version (0 if not served yet)."""
        codes = check_packed(track.codes, bits)
        offsets = np.ascontiguousarray(track.offsets, dtype="<f4")
        if offsets.shape != (codes.shape[0],):
            raise ValueError(f"track {track.track_id!r}: {codes.shape[0]} codes but offsets of shape {offsets.shape}")
        if not np.isfinite(offsets).all():
            raise ValueError(f"track {track.track_id!r}: offsets must be finite")
        pairs: list = []
        for key, value in track.info.items():
            if value is not None:
                pairs += [key, str(value)]
        peaks = b"" if track.peaks is None else np.ascontiguousarray(track.peaks, dtype="<i4").reshape(-1, 2).tobytes()
        k = self.keys
        try:
            return int(self._put(
                keys=[k.meta, k.changes, k.generation_meta(generation), k.tracks(generation),
                      *k.track_keys(generation, track.track_id)],
                args=[generation, track.track_id, codes.tobytes(), offsets.tobytes(), codes.shape[0],
                      STREAM_MAXLEN, time.time(), code_bytes(bits), peaks, *pairs],
            ))
        except redis.ResponseError as exc:
            raise _script_error(exc, self.name) from None

    def delete_track(self, track_id: str) -> int:
        """Remove one track from the served generation atomically. Returns the new version, 0 if absent."""
        info = self.info()
        if info is None or info.served is None:
            return 0
        g = info.generation
        k = self.keys
        try:
            return int(self._delete(
                keys=[k.meta, k.changes, k.generation_meta(g), k.tracks(g), *k.track_keys(g, track_id)],
                args=[g, track_id, STREAM_MAXLEN, time.time(), code_bytes(info.served.bits)],
            ))
        except redis.ResponseError as exc:
            raise _script_error(exc, self.name) from None

    def begin_rebuild(self, bits: int, hop_frames: int, model_version: str) -> int:
        """Start (or resume, if one with the same model is under way) building a new generation."""
        check_bits(bits)
        for _attempt in range(20):
            info = self.info()
            if info is None:
                raise CatalogError(f"catalog {self.name!r} does not exist")
            if info.building is not None:
                b = info.rebuild
                if b is not None and (b.bits, b.hop_frames, b.model_version) == (bits, hop_frames, model_version):
                    return info.building
                self.abandon_rebuild(info.building)
                continue
            raw_next = self.client.hget(self.keys.meta, "next_generation")
            generation = int(raw_next) + 1
            try:
                self._begin(keys=[self.keys.meta, self.keys.generation_meta(generation)],
                            args=[generation, bits, hop_frames, model_version, time.time()])
                return generation
            except redis.ResponseError as exc:
                if not str(exc).startswith(("RETRY", "BUSY")):
                    raise _script_error(exc, self.name) from None
        raise CatalogError(f"catalog {self.name!r}: could not start a rebuild (too much concurrent activity)")

    def switch_to(self, generation: int) -> int:
        """Serve the rebuilt ``generation`` from now on (atomic), then remove the previous one."""
        try:
            version, previous = self._switch(keys=[self.keys.meta, self.keys.changes],
                                             args=[generation, STREAM_MAXLEN, time.time()])
        except redis.ResponseError as exc:
            raise _script_error(exc, self.name) from None
        self.drop_generation(int(previous))
        return int(version)

    def abandon_rebuild(self, generation: int) -> None:
        if self._abandon(keys=[self.keys.meta], args=[generation]):
            self.drop_generation(generation)

    def drop_generation(self, generation: int) -> None:
        """Remove every key of one generation (its track set tells which)."""
        tracks_key = self.keys.tracks(generation)
        batch: list[str] = []
        for raw in self.client.sscan_iter(tracks_key, count=1000):
            batch += self.keys.track_keys(generation, _text(raw))
            if len(batch) >= 3 * FETCH_BATCH:
                self.client.unlink(*batch)
                batch = []
        self.client.unlink(*batch, tracks_key, self.keys.generation_meta(generation))

    def delete(self) -> bool:
        """Delete the whole catalog. Replicas see a ``drop`` change and empty themselves."""
        last_generation = self._drop(keys=[self.keys.meta, self.keys.changes], args=[STREAM_MAXLEN])
        if last_generation is None:
            return False
        for generation in range(1, int(last_generation) + 1):
            self.drop_generation(generation)
        self.client.srem(REGISTRY_KEY, self.name)
        # Leftovers of crashed runs (none in normal operation) and, last, the change stream.
        for key in self.client.scan_iter(match=self.keys.prefix + "g*", count=1000):
            self.client.unlink(key)
        self.client.unlink(self.keys.changes)
        return True


def list_catalogs(client: redis.Redis) -> list[CatalogInfo]:
    """All catalogs in the directory set, sorted by name (entries whose meta is gone are skipped)."""
    infos = []
    for raw in sorted(_text(n) for n in client.smembers(REGISTRY_KEY)):
        try:
            info = Catalog(client, raw).info()
        except CatalogError:
            continue
        if info is not None:
            infos.append(info)
    return infos
