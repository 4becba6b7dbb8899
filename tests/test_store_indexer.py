"""`streamd index` mechanics with a stand-in encoder (tests/store_doubles.py), real files, real Redis."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from store_doubles import (
    CRASH_SECONDS,
    CrashingEncoder,
    RandomProjectionEncoder,
    make_encoder,
    tone_signal,
    write_wav,
)
from typer.testing import CliRunner

from streamd.audio import load_audio
from streamd.cli import app
from streamd.config import Config
from streamd.indexer import DuplicateTrackIdError, index_paths, plan_jobs
from streamd.store.catalog import Catalog, ModelMismatchError

# `config` comes from tests/conftest.py; the `redis_url` fixture checks that its Redis answers.


@pytest.fixture
def catalog(redis_url: str, unique: Callable[[str], str]) -> Iterator[Catalog]:
    client = redis.Redis.from_url(redis_url)
    cat = Catalog(client, unique("cat"))
    yield cat
    cat.delete()
    client.close()


@pytest.fixture
def music(tmp_path: Path) -> Path:
    """Three short tracks in two folders, a corrupt "mp3", a text file and a hidden file."""
    root = tmp_path / "music"
    write_wav(root / "one.wav", tone_signal(6, 1))
    write_wav(root / "two.wav", tone_signal(5, 2))
    write_wav(root / "sub" / "three.wav", tone_signal(7, 3))
    (root / "sub" / "broken.mp3").write_bytes(os.urandom(3000))
    (root / "notes.txt").write_text("not audio")
    write_wav(root / ".hidden.wav", tone_signal(2, 4))
    return root


def run(config: Config, catalog: Catalog, paths, **kwargs):
    kwargs.setdefault("encoder_factory", RandomProjectionEncoder)
    return index_paths(config, catalog.name, paths, **kwargs)


def test_index_a_folder_then_resume_and_skip_unchanged(config: Config, catalog: Catalog, music: Path) -> None:
    report = run(config, catalog, [music])
    assert (report.planned, report.indexed, report.unchanged) == (4, 3, 0)
    assert [Path(f.path).name for f in report.failed] == ["broken.mp3"]
    info = catalog.info()
    assert info.served.tracks == 3 and info.served.model_version == "test-rp-1"
    assert catalog.track_ids(info.generation) == ["one", "three", "two"]

    expected_codes, expected_offsets = RandomProjectionEncoder().codes_for_audio(load_audio(music / "two.wav"))
    stored = next(catalog.read_tracks(info.generation, ["two"], 64, info_fields=None))
    assert np.array_equal(stored.codes, expected_codes)
    assert np.allclose(stored.offsets, expected_offsets)
    assert stored.info["title"] == "two" and float(stored.info["duration_s"]) == pytest.approx(5.0, abs=0.01)
    assert stored.info["source_path"] == str((music / "two.wav").resolve())
    assert int(stored.info["n_codes"]) == len(expected_codes) and len(stored.info["source_sha256"]) == 64

    again = run(config, catalog, [music])
    assert (again.indexed, again.unchanged, len(again.failed)) == (0, 3, 1)
    assert catalog.info().version == info.version

    os.utime(music / "one.wav", ns=(1, 1))  # touched, same bytes: still unchanged (SHA-256)
    write_wav(music / "two.wav", tone_signal(5, 99))  # new content: re-indexed
    third = run(config, catalog, [music / "one.wav", music / "two.wav"])
    assert (third.indexed, third.unchanged) == (1, 1)
    assert catalog.info().version == info.version + 1


def test_index_stores_peaks_and_backfills_tracks_indexed_without_them(config: Config, catalog: Catalog,
                                                                       music: Path) -> None:
    """Each indexed track gets its spectral peaks (streamd.peaks, those of the whole decoded file).
    A track stored without peaks (indexed by an older streamd) is not "unchanged": the next run
    encodes it again and adds them; then it is unchanged."""
    from streamd.indexer import track_peaks

    report = run(config, catalog, [music / "one.wav", music / "two.wav"])
    g = catalog.info().generation
    stored = {t.track_id: t for t in catalog.read_tracks(g, ["one", "two"], 64)}
    assert report.indexed == 2 and np.array_equal(stored["two"].peaks, track_peaks(load_audio(music / "two.wav")))
    old = next(catalog.read_tracks(g, ["one"], 64, info_fields=None))
    old.peaks = None
    catalog.put_track(g, old, 64)  # as an older streamd wrote it (info kept: same source)
    again = run(config, catalog, [music / "one.wav", music / "two.wav"])
    assert (again.indexed, again.unchanged) == (1, 1)
    assert next(catalog.read_tracks(g, ["one"], 64)).peaks is not None
    assert run(config, catalog, [music / "one.wav"]).unchanged == 1


def test_duplicate_ids_fail_before_anything_is_written(config: Config, catalog: Catalog, tmp_path: Path) -> None:
    write_wav(tmp_path / "a" / "menu.wav", tone_signal(3, 1))
    write_wav(tmp_path / "b" / "menu.wav", tone_signal(3, 2))
    with pytest.raises(DuplicateTrackIdError, match="'menu'.*--manifest"):
        run(config, catalog, [tmp_path])
    assert catalog.info() is None


def test_manifest_gives_ids_and_metadata(config: Config, catalog: Catalog, tmp_path: Path) -> None:
    write_wav(tmp_path / "a" / "menu.wav", tone_signal(3, 1))
    write_wav(tmp_path / "b" / "menu.wav", tone_signal(4, 2))
    manifest = tmp_path / "tracks.csv"
    manifest.write_text("track_id,relative_path,title,artist,label\n"
                        "game-a-menu,a/menu.wav,Menu A,Composer A,L1\n"
                        "game-b-menu,b/menu.wav,Menu B,,L2\n")
    report = run(config, catalog, [], manifest=manifest)
    assert report.indexed == 2 and not report.failed
    g = catalog.info().generation
    a = catalog.track_info(g, "game-a-menu")
    assert (a["title"], a["artist"], a["label"]) == ("Menu A", "Composer A", "L1")
    assert "artist" not in catalog.track_info(g, "game-b-menu")
    # Paths restrict a manifest run to the files under them.
    jobs, _ = plan_jobs([tmp_path / "b"], manifest)
    assert [j.track_id for j in jobs] == ["game-b-menu"]


def test_manifest_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,file\nx,y.wav\n")
    with pytest.raises(Exception, match="track_id column"):
        plan_jobs([], bad)
    dup = tmp_path / "dup.csv"
    dup.write_text("track_id,path\nx,a.wav\nx,b.wav\n")
    with pytest.raises(DuplicateTrackIdError, match="'x'"):
        plan_jobs([], dup)


def test_missing_manifest_files_are_reported_not_fatal(config: Config, catalog: Catalog, tmp_path: Path) -> None:
    write_wav(tmp_path / "ok.wav", tone_signal(3, 1))
    manifest = tmp_path / "m.csv"
    manifest.write_text("track_id,path\nok,ok.wav\ngone,gone.wav\n")
    report = run(config, catalog, [], manifest=manifest)
    assert report.indexed == 1 and [Path(f.path).name for f in report.failed] == ["gone.wav"]


def test_other_model_needs_rebuild_which_switches_atomically(config: Config, catalog: Catalog, music: Path) -> None:
    run(config, catalog, [music])
    v2 = lambda: RandomProjectionEncoder(version="test-rp-2", seed=5)  # noqa: E731
    with pytest.raises(ModelMismatchError, match="--rebuild"):
        run(config, catalog, [music], encoder_factory=v2)
    report = run(config, catalog, [music / "one.wav"], encoder_factory=v2, rebuild=True)
    assert report.switched and report.indexed == 1
    info = catalog.info()
    assert info.generation == 2 and info.served.model_version == "test-rp-2"
    assert catalog.track_ids(2) == ["one"]  # a rebuild is exactly this run's files
    assert run(config, catalog, [music / "one.wav"], encoder_factory=v2).unchanged == 1


def test_moved_file_with_same_id_needs_replace(config: Config, catalog: Catalog, tmp_path: Path) -> None:
    write_wav(tmp_path / "x" / "song.wav", tone_signal(3, 1))
    write_wav(tmp_path / "y" / "song.wav", tone_signal(3, 2))
    run(config, catalog, [tmp_path / "x"])
    with pytest.raises(DuplicateTrackIdError, match="--replace"):
        run(config, catalog, [tmp_path / "y"])
    assert run(config, catalog, [tmp_path / "y"], replace=True).indexed == 1


def test_worker_processes_give_the_same_catalog(config: Config, catalog: Catalog, music: Path) -> None:
    report = run(config, catalog, [music], workers=2, encoder_factory=make_encoder)
    assert report.indexed == 3 and [Path(f.path).name for f in report.failed] == ["broken.mp3"]
    stored = next(catalog.read_tracks(catalog.info().generation, ["three"], 64))
    expected, _ = RandomProjectionEncoder().codes_for_audio(load_audio(music / "sub" / "three.wav"))
    assert np.array_equal(stored.codes, expected)


@pytest.mark.slow
def test_a_crashing_worker_fails_only_its_file(config: Config, catalog: Catalog, music: Path) -> None:
    write_wav(music / "killer.wav", tone_signal(CRASH_SECONDS, 7))  # its worker process dies
    report = run(config, catalog, [music], workers=2, encoder_factory=CrashingEncoder)
    assert report.indexed == 3
    assert sorted((Path(f.path).name, "crashed" in f.reason) for f in report.failed) == [
        ("broken.mp3", False), ("killer.wav", True)]


def test_concurrent_runs_on_the_same_files_are_safe(config: Config, catalog: Catalog, music: Path) -> None:
    catalog.ensure(64, 48, "test-rp-1")
    reports, errors = [], []

    def index_once() -> None:
        try:
            reports.append(run(config, catalog, [music]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=index_once) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    served = catalog.info().served
    stored = list(catalog.read_tracks(catalog.info().generation, ["one", "two", "three"], 64, info_fields=None))
    assert served.tracks == 3 and served.codes == sum(len(t.codes) for t in stored)
    for track in stored:
        assert int(track.info["n_codes"]) == len(track.codes) == len(track.offsets)


def test_cli_index_with_the_shipped_model_and_catalog_commands(redis_url: str, catalog: Catalog, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The real command, with the real model (weights in models/), and catalog list/show/delete."""
    write_wav(tmp_path / "a.wav", tone_signal(4, 1))
    (tmp_path / "bad.ogg").write_bytes(b"OggS" + os.urandom(500))
    monkeypatch.setenv("STREAMD_REDIS__URL", redis_url)
    monkeypatch.setenv("COLUMNS", "300")
    runner = CliRunner()
    result = runner.invoke(app, ["index", "--catalog", catalog.name, str(tmp_path)])
    assert result.exit_code == 1, result.output  # one file failed: reported, run completed
    assert "1 indexed" in result.output and "bad.ogg" in result.output
    info = catalog.info()
    assert info.served.tracks == 1 and info.served.bits == 128 and info.served.codes >= 3
    listed = runner.invoke(app, ["catalog", "list"])
    assert listed.exit_code == 0 and catalog.name in listed.output
    shown = runner.invoke(app, ["catalog", "show", catalog.name])
    assert shown.exit_code == 0 and "a" in shown.output and info.served.model_version in shown.output
    deleted = runner.invoke(app, ["catalog", "delete", catalog.name, "--yes"])
    assert deleted.exit_code == 0 and catalog.info() is None
    missing = runner.invoke(app, ["catalog", "show", catalog.name])
    assert missing.exit_code != 0
