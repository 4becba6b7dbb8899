"""`streamd index`: decode audio files, fingerprint them with the model, write them to a catalog.

Steps: plan (walk the paths, read the manifest, give each file a track id, refuse duplicate
ids before touching Redis), check the catalog against the model (bits, hop, version), skip files
already indexed and unchanged (same path, size and mtime, or same SHA-256), then decode + encode
(in worker processes with ``workers > 1``) and write each track atomically as it is done.
A file that cannot be decoded or encoded is reported and skipped; it never stops the run. An
interrupted run resumes where it stopped, because finished tracks are skipped next time.

``rebuild=True`` indexes into a new generation of the catalog (started, or resumed if an
earlier rebuild with the same model was interrupted) and switches the catalog to it atomically
at the end; tracks not in this run are then gone.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import functools
import hashlib
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streamd.config import Config, ModelConfig
from streamd.errors import StreamdError
from streamd.store.catalog import Catalog, ModelMismatchError, Track, connect

SAMPLE_RATE = 12000
AUDIO_EXTENSIONS = frozenset({
    ".aac", ".ac3", ".aif", ".aifc", ".aiff", ".alac", ".amr", ".ape", ".au", ".caf", ".dts", ".flac", ".m4a",
    ".m4b", ".mka", ".mkv", ".mp2", ".mp3", ".mp4", ".mpc", ".oga", ".ogg", ".opus", ".ra", ".spx", ".tta",
    ".w64", ".wav", ".webm", ".wma", ".wv",
})
PATH_COLUMNS = ("path", "relative_path", "file")
COMPUTED_FIELDS = ("duration_s", "n_codes", "model_version", "indexed_at", "source_path", "source_size",
                   "source_mtime_ns", "source_sha256")


class Encoder(Protocol):
    """What the indexer needs from the model (:class:`streamd.model.Fingerprinter` is one)."""

    bits: int
    hop_frames: int
    version: str

    def codes_for_audio(self, audio_12k: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class DuplicateTrackIdError(StreamdError):
    """Two inputs would get the same track id."""


@dataclass(frozen=True)
class Job:
    """One file to index and the id + manifest metadata it gets."""

    track_id: str
    path: Path
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    path: str
    reason: str


@dataclass
class Encoded:
    job: Job
    codes: np.ndarray
    offsets: np.ndarray
    duration_s: float
    sha256: str
    tags: dict[str, str]
    peaks: np.ndarray | None = None  # spectral peaks of the whole track (streamd.peaks)


@dataclass
class IndexReport:
    catalog: str
    generation: int = 0
    version: int = 0
    planned: int = 0
    indexed: int = 0
    unchanged: int = 0
    codes: int = 0
    audio_s: float = 0.0
    elapsed_s: float = 0.0
    switched: bool = False
    failed: list[Failure] = field(default_factory=list)


# --- planning ----------------------------------------------------------------------------------


def find_audio_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[Failure]]:
    """Files named directly, plus audio files (by extension) under named folders, sorted, resolved.

    Hidden files and folders are skipped. Paths that do not exist are reported as failures.
    """
    files: list[Path] = []
    missing: list[Failure] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files += [Path(root, n).resolve() for n in sorted(names)
                          if not n.startswith(".") and Path(n).suffix.lower() in AUDIO_EXTENSIONS]
        elif path.exists():
            files.append(path.resolve())
        else:
            missing.append(Failure(str(raw), "no such file or folder"))
    return sorted(dict.fromkeys(files)), missing


def read_manifest(path: str | Path) -> list[Job]:
    """Jobs from a CSV manifest: a ``track_id`` column, a path column (``path``, ``relative_path``
    or ``file``, relative to the manifest's folder unless absolute) and any metadata columns."""
    path = Path(path).expanduser()
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            path_column = next((c for c in PATH_COLUMNS if c in columns), None)
            if "track_id" not in columns or path_column is None:
                raise StreamdError(f"manifest {path}: needs a track_id column and one of {', '.join(PATH_COLUMNS)} "
                                   f"(has: {', '.join(columns) or 'no header'})")
            jobs = []
            for line, row in enumerate(reader, start=2):
                track_id = (row.get("track_id") or "").strip()
                file = (row.get(path_column) or "").strip()
                if not track_id or not file:
                    raise StreamdError(f"manifest {path}, line {line}: empty track_id or {path_column}")
                meta = {k: v for k, v in row.items()
                        if k not in ("track_id", path_column) and k is not None and v not in (None, "")}
                jobs.append(Job(track_id, (path.parent / file).expanduser().resolve(), meta))
    except OSError as exc:
        raise StreamdError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise StreamdError(f"manifest {path} is not a readable CSV file: {exc}") from None
    return jobs


def plan_jobs(paths: Sequence[str | Path], manifest: str | Path | None = None) -> tuple[list[Job], list[Failure]]:
    """The jobs of a run, and inputs that are missing. Raises DuplicateTrackIdError on id clashes.

    Without a manifest every file found under ``paths`` is a job with its file name (without
    extension) as id. With one, its rows give ids and metadata; if ``paths`` are given too, only
    the files under them are indexed (those not in the manifest get their file name as id).
    """
    files, failures = find_audio_files(paths)
    if manifest is None:
        jobs = [Job(f.stem, f) for f in files]
    else:
        listed = read_manifest(manifest)
        by_path: dict[Path, Job] = {}
        for job in listed:
            if job.path in by_path:
                raise DuplicateTrackIdError(f"manifest {manifest} lists {job.path} twice "
                                            f"(as {by_path[job.path].track_id!r} and {job.track_id!r})")
            by_path[job.path] = job
        if paths:
            jobs = [by_path.get(f, Job(f.stem, f)) for f in files]
        else:
            jobs = listed
    _check_unique_ids(jobs)
    return jobs, failures


def _check_unique_ids(jobs: Sequence[Job]) -> None:
    seen: dict[str, Path] = {}
    clashes = []
    for job in jobs:
        if job.track_id in seen:
            clashes.append(f"{job.track_id!r} ({seen[job.track_id]} and {job.path})")
        else:
            seen[job.track_id] = job.path
    if clashes:
        shown = "; ".join(clashes[:5]) + (f"; and {len(clashes) - 5} more" if len(clashes) > 5 else "")
        raise DuplicateTrackIdError(
            f"{len(clashes)} duplicate track id(s): {shown}. Give unique ids with --manifest "
            "(CSV with track_id and path columns)"
        )


# --- encoding (runs in worker processes when workers > 1) --------------------------------------


def load_model_encoder(model_config: ModelConfig) -> Encoder:
    """The shipped model as an :class:`Encoder` (imported lazily: torch is heavy)."""
    from streamd.model import load_fingerprinter

    return load_fingerprinter(model_config)


_worker_encoder: Encoder | None = None


def _init_worker(encoder_factory: Callable[[], Encoder], torch_threads: int) -> None:
    global _worker_encoder
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    _worker_encoder = encoder_factory()


def _encode_in_worker(job: Job) -> Encoded | Failure:
    assert _worker_encoder is not None
    return encode_file(job, _worker_encoder)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(functools.partial(f.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_tags(path: Path) -> dict[str, str]:
    """Title and artist from the file's tags, when it has them (container or first audio stream)."""
    import av

    found: dict[str, str] = {}
    try:
        with av.open(str(path)) as container:
            sources = [container.metadata] + [s.metadata for s in container.streams.audio[:1]]
            for tags in sources:
                lowered = {k.lower(): v for k, v in tags.items()}
                for name in ("title", "artist"):
                    if lowered.get(name) and name not in found:
                        found[name] = lowered[name].strip()
    except Exception:  # tags are a nicety; the decode step reports unreadable files
        return {}
    return found


def track_peaks(audio: np.ndarray) -> np.ndarray:
    """Spectral peaks of a whole 12 kHz track (streamd.peaks): what the decision logic compares a
    stream's newest seconds with when a candidate asks for a peak check."""
    import torch

    from streamd.melspec import offline_logmel
    from streamd.peaks import extract

    return extract(offline_logmel(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))))


def encode_file(job: Job, encoder: Encoder) -> Encoded | Failure:
    """Decode one file and compute its codes; any problem becomes a :class:`Failure`."""
    from streamd.audio import load_audio

    try:
        audio = load_audio(job.path, sample_rate=SAMPLE_RATE)
        codes, offsets = encoder.codes_for_audio(audio)
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        offsets = np.asarray(offsets, dtype=np.float32)
        if codes.ndim != 2 or codes.shape[1] != encoder.bits // 8 or offsets.shape != (codes.shape[0],):
            return Failure(str(job.path), f"encoder returned codes {codes.shape} and offsets {offsets.shape}")
        if len(codes) == 0:
            return Failure(str(job.path), f"too short to fingerprint ({len(audio) / SAMPLE_RATE:.1f} s)")
        return Encoded(job, codes, offsets, len(audio) / SAMPLE_RATE, file_sha256(job.path), read_tags(job.path),
                       track_peaks(audio))
    except StreamdError as exc:
        return Failure(str(job.path), str(exc))
    except MemoryError:
        return Failure(str(job.path), "out of memory while decoding")
    except Exception as exc:  # one bad file must not stop a long run
        return Failure(str(job.path), f"{type(exc).__name__}: {exc}")


def _encode_all(jobs: Sequence[Job], encoder: Encoder, encoder_factory: Callable[[], Encoder],
                workers: int) -> Iterator[Encoded | Failure]:
    """Results in completion order. With workers, a worker that dies (a decoder crash on a
    corrupt file) breaks the pool and every file then in flight: those files are retried one at
    a time in a new pool, so that only the file that crashes on its own is reported."""
    if workers <= 1:
        for job in jobs:
            yield encode_file(job, encoder)
        return
    torch_threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")  # fork + torch/numba threads is not safe

    def new_pool() -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                      initargs=(encoder_factory, torch_threads))

    queue = iter(jobs)
    suspects: deque[Job] = deque()
    pool = new_pool()
    pending: dict[cf.Future, Job] = {}
    try:
        while True:
            isolating = bool(suspects)
            if isolating and not pending:
                job = suspects.popleft()
                pending[pool.submit(_encode_in_worker, job)] = job
            while not isolating and len(pending) < 2 * workers:  # bounded in flight: memory
                job = next(queue, None)
                if job is None:
                    break
                pending[pool.submit(_encode_in_worker, job)] = job
            if not pending:
                return
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            crashed = []
            for future in done:
                job = pending.pop(future)
                try:
                    yield future.result()
                except BrokenProcessPool:
                    crashed.append(job)
                except Exception as exc:  # e.g. an unpicklable result
                    yield Failure(str(job.path), f"worker error: {type(exc).__name__}: {exc}")
            if crashed:
                in_flight = crashed + list(pending.values())
                pending.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = new_pool()
                if isolating:
                    yield Failure(str(in_flight[0].path), "the decoding process crashed on this file")
                else:
                    suspects.extend(in_flight)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


# --- the run -------------------------------------------------------------------------------------


def _track_info(result: Encoded, encoder: Encoder, stat: os.stat_result) -> dict[str, Any]:
    info: dict[str, Any] = {"title": result.job.path.stem, **result.tags, **result.job.meta}
    info.update(
        duration_s=f"{result.duration_s:.3f}", n_codes=len(result.codes), model_version=encoder.version,
        indexed_at=f"{time.time():.3f}", source_path=str(result.job.path), source_size=stat.st_size,
        source_mtime_ns=stat.st_mtime_ns, source_sha256=result.sha256,
    )
    return info


def _split_unchanged(jobs: Sequence[Job], stored: dict[str, dict[str, str]], replace: bool,
                     ) -> tuple[list[Job], int, list[Failure]]:
    """(jobs to encode, how many are unchanged, files that vanished). Raises on foreign overwrites."""
    todo, unchanged, vanished, conflicts = [], 0, [], []
    for job in jobs:
        try:
            st = job.path.stat()
        except OSError as exc:
            vanished.append(Failure(str(job.path), exc.strerror or "cannot stat"))
            continue
        old = stored.get(job.track_id)
        if old is None:
            todo.append(job)
            continue
        same_path = old["source_path"] == str(job.path)
        if old.get("has_peaks") == "0" and (same_path or old["source_sha256"] == file_sha256(job.path)):
            todo.append(job)  # indexed before peaks were stored: encode again to add them
        elif same_path and old["source_size"] == str(st.st_size) and old["source_mtime_ns"] == str(st.st_mtime_ns):
            unchanged += 1
        elif old["source_size"] == str(st.st_size) and old["source_sha256"] == file_sha256(job.path):
            unchanged += 1  # touched or moved, same bytes
        elif same_path or replace:
            todo.append(job)
        else:
            conflicts.append(f"{job.track_id!r} (stored from {old['source_path']}, now {job.path})")
    if conflicts:
        shown = "; ".join(conflicts[:5]) + (f"; and {len(conflicts) - 5} more" if len(conflicts) > 5 else "")
        raise DuplicateTrackIdError(
            f"{len(conflicts)} track id(s) already in the catalog come from other files: {shown}. "
            "Use --replace to overwrite them, or give other ids with --manifest"
        )
    return todo, unchanged, vanished


def index_paths(
    config: Config,
    catalog_name: str,
    paths: Sequence[str | Path],
    *,
    manifest: str | Path | None = None,
    workers: int = 1,
    rebuild: bool = False,
    replace: bool = False,
    encoder_factory: Callable[[], Encoder] | None = None,
    show_progress: bool = False,
) -> IndexReport:
    """Index ``paths`` (and/or a manifest) into ``catalog_name``; see the module docstring.

    ``encoder_factory``: makes the encoder (default: the shipped model from ``config.model``); it
    must be picklable when ``workers > 1`` since each worker process makes its own.
    """
    started = time.monotonic()
    if not paths and manifest is None:
        raise StreamdError("nothing to index: give files or folders, or --manifest")
    if workers < 1:
        raise StreamdError(f"--workers must be at least 1, got {workers}")
    jobs, failures = plan_jobs(paths, manifest)  # duplicate ids fail here, before any write
    report = IndexReport(catalog=catalog_name, planned=len(jobs), failed=list(failures))
    factory = encoder_factory or functools.partial(load_model_encoder, config.model)
    encoder = factory()

    client = connect(config.redis)
    try:
        catalog = Catalog(client, catalog_name)
        info = catalog.ensure(encoder.bits, encoder.hop_frames, encoder.version)
        served = info.served
        assert served is not None
        if rebuild:
            generation = catalog.begin_rebuild(encoder.bits, encoder.hop_frames, encoder.version)
        else:
            if (served.bits, served.hop_frames, served.model_version) != (encoder.bits, encoder.hop_frames,
                                                                           encoder.version):
                raise ModelMismatchError(
                    f"catalog {catalog_name!r} was indexed with {served.describe_model()}, but this is "
                    f"model {encoder.version!r} ({encoder.bits}-bit codes, hop {encoder.hop_frames} frames): "
                    "run with --rebuild to re-index it into a new version"
                )
            generation = info.generation
        report.generation = generation

        stored = catalog.stored_sources(generation, [j.track_id for j in jobs])
        todo, report.unchanged, vanished = _split_unchanged(jobs, stored, replace)
        report.failed += vanished
        with _progress(show_progress, len(jobs), report.unchanged + len(vanished)) as advance:
            for result in _encode_all(todo, encoder, factory, workers):
                if isinstance(result, Failure):
                    report.failed.append(result)
                else:
                    _write(catalog, generation, encoder, result, report)
                advance(result)
        if rebuild and report.indexed + report.unchanged == 0:
            report.failed.append(Failure("(rebuild)", f"nothing was indexed: still serving generation "
                                                      f"{info.generation}; generation {generation} is kept to resume"))
            report.version = catalog.info().version
        elif rebuild:
            report.version = catalog.switch_to(generation)
            report.switched = True
        else:
            now = catalog.info()
            report.version = now.version if now else 0
    finally:
        client.close()
    report.elapsed_s = time.monotonic() - started
    return report


def _write(catalog: Catalog, generation: int, encoder: Encoder, result: Encoded, report: IndexReport) -> None:
    try:
        stat = result.job.path.stat()
    except OSError as exc:
        report.failed.append(Failure(str(result.job.path), exc.strerror or "vanished while indexing"))
        return
    track = Track(result.job.track_id, result.codes, result.offsets, _track_info(result, encoder, stat), result.peaks)
    catalog.put_track(generation, track, encoder.bits)
    report.indexed += 1
    report.codes += len(result.codes)
    report.audio_s += result.duration_s


class _progress:
    """A rich progress bar over files (or nothing), as a context manager yielding ``advance(result)``."""

    def __init__(self, enabled: bool, total: int, already: int):
        self.enabled, self.total, self.already = enabled, total, already
        self.bar = None

    def __enter__(self) -> Callable[[Encoded | Failure], None]:
        if not self.enabled:
            return lambda _result: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn("[bold]indexing"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
                            TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[last]}"),
                            console=Console(stderr=True), transient=False)
        self.bar.start()
        task = self.bar.add_task("index", total=self.total, completed=self.already, last="")

        def advance(result: Encoded | Failure) -> None:
            name = Path(result.path).name if isinstance(result, Failure) else result.job.path.name
            mark = "[red]✗[/] " if isinstance(result, Failure) else ""
            self.bar.update(task, advance=1, last=f"{mark}{name[:40]}")

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def format_report(report: IndexReport) -> list[str]:
    """Human-readable summary lines of a run (the CLI prints them)."""
    lines = [
        f"catalog {report.catalog!r}: {report.indexed} indexed, {report.unchanged} unchanged, "
        f"{len(report.failed)} failed, of {report.planned} planned files "
        f"({report.codes} codes from {report.audio_s / 3600:.2f} h of audio in {report.elapsed_s:.1f} s)",
    ]
    if report.switched:
        lines.append(f"switched to the rebuilt generation {report.generation} (version {report.version})")
    else:
        lines.append(f"generation {report.generation}, version {report.version}")
    for failure in report.failed:
        lines.append(f"  failed: {failure.path}: {failure.reason}")
    return lines
