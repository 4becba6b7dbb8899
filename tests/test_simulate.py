"""The simulator's truth matches its audio, covers the timeline, and a seed reproduces it byte for byte."""

import hashlib
import json
import wave

import numpy as np
import pytest

from streamd import degrade
from streamd.eval import simulate as sim

SR = 12000


def chirp(duration_s: float, base_hz: float) -> np.ndarray:
    """A tone whose frequency says the track time: base_hz + 20 Hz per second."""
    t = np.arange(int(duration_s * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * (base_hz * t + 10.0 * t**2))).astype(np.float32)


def sources(prefix: str, durations: list[float], base: float) -> list[sim.Source]:
    return [sim.Source(f"{prefix}{i}", None, d, chirp(d, base + 700 * i)) for i, d in enumerate(durations)]


CATALOG = sources("cat", [40.0, 55.0], 200.0)
UNKNOWN = sources("unk", [35.0], 550.0)


def read_wav(path) -> np.ndarray:
    with wave.open(str(path)) as handle:
        assert handle.getframerate() == SR and handle.getnchannels() == 1
        return np.frombuffer(handle.readframes(handle.getnframes()), "<i2") / 32768.0


def digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    truth = sim.simulate(CATALOG, UNKNOWN, out, hours=2 / 60, streams=3, seed=7, block_s=25)
    return out, truth


def test_truth_covers_each_station_without_gaps(tiny_run):
    out, truth = tiny_run
    assert {p.name for p in out.iterdir()} == {
        "sim-000.wav",
        "sim-001.wav",
        "sim-002.wav",
        "truth.json",
        "truth.csv",
    }
    for station in truth.stations:
        main = sorted(
            (s for s in truth.segments if s.stream == station.stream and s.layer == "main"),
            key=lambda s: s.start_s,
        )
        assert main[0].start_s == 0.0 and main[-1].end_s == pytest.approx(120.0)
        assert len(read_wav(out / station.file)) == 120 * SR
        for before, after in zip(main, main[1:], strict=False):
            overlap = before.end_s - after.start_s
            assert 0.0 <= overlap <= 5.0 + 1e-6  # touching, or a crossfade
            if "silence" in (before.kind, after.kind):
                assert overlap == 0.0
        for segment in main:
            assert segment.kind in sim.KINDS and segment.end_s > segment.start_s
            if segment.kind in sim.MUSIC_KINDS:
                pool = CATALOG if segment.kind == "catalog" else UNKNOWN
                track = next(s for s in pool if s.track_id == segment.track_id)
                played = (segment.end_s - segment.start_s) * segment.speed
                assert segment.offset_s >= 0 and segment.offset_s + played <= track.duration_s + 1e-3


def test_same_seed_gives_byte_identical_outputs(tiny_run, tmp_path):
    out, truth = tiny_run
    again = sim.simulate(CATALOG, UNKNOWN, tmp_path, hours=2 / 60, streams=3, seed=7, block_s=25)
    assert again == truth
    assert digest(tmp_path) == digest(out)


def test_worker_processes_write_the_same_bytes(tiny_run, tmp_path):
    out, truth = tiny_run
    seen = []
    sim.simulate(
        CATALOG, UNKNOWN, tmp_path, hours=2 / 60, streams=3, seed=7, block_s=25, jobs=2,
        progress=lambda stream, seconds: seen.append((stream, seconds)),
    )  # fmt: skip
    assert digest(tmp_path) == digest(out)
    assert {stream for stream, _ in seen} == {"sim-000", "sim-001", "sim-002"}


def test_another_seed_gives_another_broadcast(tiny_run, tmp_path):
    out, truth = tiny_run
    other = sim.simulate(CATALOG, UNKNOWN, tmp_path, hours=2 / 60, streams=3, seed=8, block_s=25)
    assert other.segments != truth.segments


def test_truth_files_agree_and_round_trip(tiny_run):
    out, truth = tiny_run
    assert sim.load_truth(out) == truth
    rows = (out / "truth.csv").read_text().splitlines()
    assert rows[0].split(",")[:7] == ["stream", "kind", "track_id", "start_s", "end_s", "offset_s", "speed"]
    assert len(rows) == 1 + len(truth.segments)
    stored = json.loads((out / "truth.json").read_text())
    assert stored["stations"][0]["chain"]["steps"] == []  # the first station is the clean reference


@pytest.mark.parametrize("speed", [1.0, 1.03, 0.97])
def test_audio_plays_the_track_time_the_truth_says(speed):
    """The instantaneous frequency of the chirps in the station audio matches the truth's offset and speed."""
    rng = np.random.default_rng(3)
    schedule = sim.Schedule(weights=(("catalog", 1.0),), talkover_probability=0.0, full_track_probability=0.0)
    items = sim.plan_station(rng, CATALOG, [], 150.0, SR, speed=speed, schedule=schedule)
    chain = degrade.DegradationChain((degrade.Step("speed", {"factor": speed}),))
    blocks = []

    class Collect:
        def write(self, block):
            blocks.append(block)

    tracks = {
        "catalog": sim._TrackCache(CATALOG, SR, loader=None),
        "unknown": sim._TrackCache([], SR, loader=None),
    }
    sim.render_station(items, chain, SR, tracks, Collect(), block_s=30)
    audio = np.concatenate(blocks)
    assert len(audio) == 150 * SR
    checked = 0
    for segment in sim.segments_of("s", items, SR):
        if segment.end_s - segment.start_s < 12:
            continue
        base = 200.0 + 700 * int(segment.track_id[-1])
        for t in np.arange(segment.start_s + 5.5, segment.end_s - 5.5, 3.0):  # clear of crossfades
            window = audio[int((t - 0.25) * SR) : int((t + 0.25) * SR)] * np.hanning(SR // 2)
            spectrum = np.abs(np.fft.rfft(window, 8 * SR))
            observed_hz = np.argmax(spectrum) / 8
            track_time = segment.offset_s + (t - segment.start_s) * segment.speed
            expected_hz = (base + 20.0 * track_time) * segment.speed
            assert abs(observed_hz - expected_hz) < 2.0, (segment, t)
            checked += 1
    assert checked > 10


def test_flac_output_matches_wav(tmp_path):
    truth = sim.simulate(CATALOG, UNKNOWN, tmp_path / "f", hours=0.5 / 60, streams=1, seed=1, fmt="flac")
    sim.simulate(CATALOG, UNKNOWN, tmp_path / "w", hours=0.5 / 60, streams=1, seed=1, fmt="wav")
    import av

    with av.open(str(tmp_path / "f" / truth.stations[0].file)) as container:
        decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    assert np.array_equal(
        decoded, np.round(read_wav(tmp_path / "w" / "sim-000.wav") * 32768).astype(np.int16)
    )


def test_sources_from_folder_list_and_manifest(tmp_path):
    music = tmp_path / "music"
    (music / "a").mkdir(parents=True)
    for name in ["a/one.wav", "two.wav"]:
        with wave.open(str(music / name), "wb") as handle:
            handle.setnchannels(1), handle.setsampwidth(2), handle.setframerate(SR)
            handle.writeframes(np.zeros(SR * 2, "<i2").tobytes())
    found = sim.find_sources(music)
    assert [s.track_id for s in found] == ["a/one", "two"] and found[0].duration_s == pytest.approx(2.0)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{music / 'two.wav'}\n# comment\n")
    assert [s.track_id for s in sim.find_sources(listing)] == ["two"]
    (music / "manifest.csv").write_text(
        "track_id,relative_path,duration_s\nx__one,a/one.wav,2.0\ny__two,two.wav,2.0\n"
    )
    assert [s.track_id for s in sim.find_sources(music, {"y__two"})] == ["y__two"]
    with pytest.raises(sim.SimulationError):
        sim.find_sources(tmp_path / "missing")


def test_bad_arguments_are_typed_errors(tmp_path):
    with pytest.raises(sim.SimulationError):
        sim.simulate([], [], tmp_path, hours=0.01, streams=1)
    with pytest.raises(sim.SimulationError):
        sim.simulate(CATALOG, UNKNOWN, tmp_path, hours=0.01, streams=1, fmt="mp3")


def write_wav(path, audio) -> None:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1), handle.setsampwidth(2), handle.setframerate(SR)
        handle.writeframes(np.round(audio * 32767).astype("<i2").tobytes())


def test_cli_simulates_from_folders_and_scores_its_own_truth(tmp_path):
    from typer.testing import CliRunner

    from streamd.cli import app

    for folder, pool in (("catalog", CATALOG), ("unknown", UNKNOWN)):
        (tmp_path / folder).mkdir()
        for source in pool:
            write_wav(tmp_path / folder / f"{source.track_id}.wav", source.audio)
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["simulate", "--catalog-dir", str(tmp_path / "catalog"), "--unknown-dir", str(tmp_path / "unknown"),
         "--hours", str(1.5 / 60), "--streams", "2", "--out", str(out), "--weights", "catalog=3,unknown=1,talk=1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    truth = json.loads((out / "truth.json").read_text())
    assert {s["kind"] for s in truth["segments"]} <= {"catalog", "unknown", "talk"}
    events = out / "events.jsonl"
    events.write_text(
        "".join(
            json.dumps(
                {
                    "stream_id": s["stream"],
                    "track_id": s["track_id"],
                    "start_s": s["start_s"],
                    "end_s": s["end_s"],
                }
            )
            + "\n"
            for s in truth["segments"]
            if s["kind"] == "catalog"
        )
    )
    result = runner.invoke(
        app,
        ["score", "--truth", str(out), "--events", str(events), "--json", str(out / "report.json"),
         "--plot", str(out / "timeline.png"), "--plot-stream", "sim-001"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["overall"]["f1"] == 1.0 and report["overall"]["false_events"] == 0
    assert (out / "timeline.png").read_bytes()[:4] == b"\x89PNG"
