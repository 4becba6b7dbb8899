"""The `streamd` command line. Each command is a thin shell over a module's function.

Errors that a user can fix (bad config, unreadable file, unreachable server) are printed as one
line without a traceback and give a non-zero exit status.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from streamd.config import Config, ConfigError, load_config
from streamd.errors import StreamdError

app = typer.Typer(
    name="streamd",
    help="Real-time music recognition for broadcast monitoring.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
services_app = typer.Typer(help="Start, stop and inspect the local Kafka + Redis stack.", no_args_is_help=True)
catalog_app = typer.Typer(help="List, show and delete catalogs in Redis.", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(catalog_app, name="catalog")

err_console = Console(stderr=True)
_state: dict[str, Any] = {"config_path": None}

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (default: ./config.yaml or $STREAMD_CONFIG).")
]


@app.callback()
def _main(config: ConfigOption = None) -> None:
    _state["config_path"] = config


def get_config(**overrides: Any) -> Config:
    """The config for this invocation: file + STREAMD_* env + the command's flags (dotted keys)."""
    return load_config(_state["config_path"], {k.replace("__", "."): v for k, v in overrides.items()})


def main() -> None:
    """Console entry point: run the app, turning user-facing errors into one-line messages.

    Typer's standalone mode already handles usage errors, ``--help`` and exit codes; what is
    left are streamd's own errors, which are printed without a traceback.
    """
    try:
        app()
    except (ConfigError, StreamdError) as exc:
        _error(str(exc))
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # not a streamd error: one line still; STREAMD_DEBUG=1 shows the traceback
        import os

        if os.environ.get("STREAMD_DEBUG"):
            raise
        _error(_unexpected(exc))
        sys.exit(1)


def _error(message: str) -> None:
    """Print ``error: message`` as exactly one line, with any URL password masked."""
    from rich.markup import escape

    from streamd.logs import Redactor

    line = " ".join(Redactor()(message).split())
    err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)


def _unexpected(exc: Exception) -> str:
    """A one-line description of an error streamd did not anticipate (unreachable servers first)."""
    import redis

    if isinstance(exc, redis.AuthenticationError | redis.ResponseError):  # AuthenticationError is a ConnectionError
        return f"Redis refused the request (check redis.username / redis.password and the ACL): {exc}"
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return f"cannot reach Redis (redis.url): {exc}"
    return f"{type(exc).__name__}: {exc} (unexpected; run with STREAMD_DEBUG=1 for the traceback)"


# --- Commands. Each helper module owns the body of its command(s). ---------------------------


def _print_services(statuses: list) -> None:
    console = Console()
    for s in statuses:
        state = "[green]up[/]" if s.ready else ("[yellow]starting[/]" if s.running else "[red]stopped[/]")
        pid = f"pid {s.pid}" if s.pid else "no process"
        console.print(f"[bold]{s.name:<6}[/] {state}  {pid}  {s.address}  version {s.version}")
        console.print(f"       data {s.data_dir} ({s.disk_bytes / 1e6:.1f} MB)", highlight=False)
        console.print(f"       {s.detail}", highlight=False)


@services_app.command("up")
def services_up() -> None:
    """Start local Kafka (KRaft) and Redis on 127.0.0.1, waiting until both answer."""
    from streamd import services

    _print_services(services.up(get_config(), log=err_console.print))


@services_app.command("down")
def services_down() -> None:
    """Stop the local Kafka and Redis started by `services up`."""
    from streamd import services

    services.down(get_config(), log=err_console.print)


@services_app.command("status")
def services_status() -> None:
    """Say what runs where (exit status 3 when a service is not up)."""
    from streamd import services

    statuses = services.status(get_config())
    _print_services(statuses)
    if not all(s.ready for s in statuses):
        raise typer.Exit(3)


@app.command()
def ingest(
    source: Annotated[str, typer.Argument(help="Audio file or HTTP/Icecast URL (anything FFmpeg reads).")],
    stream: Annotated[str, typer.Option("--stream", "-s", help="Stream id: the Kafka key of every chunk.")],
    topic: Annotated[str | None, typer.Option(help="Topic (default: kafka.audio_topic).")] = None,
    realtime: Annotated[
        bool, typer.Option("--realtime/--fast", help="Pace chunks by the wall clock, or send as fast as possible.")
    ] = False,
    chunk_ms: Annotated[float, typer.Option(min=10, max=10_000, help="Chunk length in milliseconds.")] = 500,
    sample_rate: Annotated[
        int | None, typer.Option(min=1000, max=384_000, help="Resample to this rate (default: the source's).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="PCM format of the payload: s16le or f32le.")] = "s16le",
    mono: Annotated[bool, typer.Option("--mono", help="Downmix to one channel.")] = False,
    loop: Annotated[bool, typer.Option("--loop", help="Start the source again at its end (until Ctrl-C).")] = False,
) -> None:
    """Decode a file or HTTP/Icecast URL and produce protocol chunks to Kafka."""
    import signal
    import threading

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from streamd import ingest as ingest_mod
    from streamd.protocol import FORMATS

    if fmt not in FORMATS:
        raise StreamdError(f"--format: {fmt!r} is not allowed; allowed values: {', '.join(FORMATS)}")
    config = get_config()
    topic = topic or config.kafka.audio_topic
    stop = threading.Event()

    def on_sigint(*_: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        err_console.print("stopping: flushing what was sent (Ctrl-C again to abort) ...")

    previous = signal.signal(signal.SIGINT, on_sigint)
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), console=err_console,
    )  # fmt: skip
    task = progress.add_task(stream, total=None, info="opening ...")

    def on_open(info: ingest_mod.SourceInfo) -> None:
        total = info.duration_s if info.duration_s and not loop else None
        progress.update(task, total=total)
        length = f"{info.duration_s:.1f} s" if info.duration_s else "live"
        err_console.print(
            f"{info.source}: {info.codec}, {info.source_rate} Hz -> {info.sample_rate} Hz, "
            f"{info.channels} ch, {length} -> {topic}",
            highlight=False,
        )

    def on_record(record: object, stats: ingest_mod.IngestStats) -> None:
        info = f"{stats.records} chunks  {stats.audio_s:7.1f} s audio  {stats.bytes / 1e6:6.1f} MB  {stats.speed:5.1f}x"
        progress.update(task, completed=stats.audio_s, info=info)

    try:
        with progress:
            stats = ingest_mod.ingest_source(
                config, source, stream, topic=topic, realtime=realtime, chunk_ms=chunk_ms,
                sample_rate=sample_rate, fmt=fmt, mono=mono, loop=loop, stop=stop,
                on_open=on_open, on_record=on_record,
            )  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)
    seq = stats.last_seq.get(stream)
    Console().print(
        f"{'interrupted: ' if stats.stopped_early else ''}sent {stats.records} chunks of {stream} to {topic} "
        f"(seq 0..{seq}), {stats.audio_s:.1f} s of audio, {stats.bytes / 1e6:.1f} MB in {stats.elapsed_s:.1f} s "
        f"({stats.speed:.1f}x real time)",
        highlight=False,
    )
    if stats.stopped_early:
        raise typer.Exit(130)


@app.command()
def run(
    catalog: Annotated[str | None, typer.Option("--catalog", help="Catalog name (default: store.catalog).")] = None,
    group: Annotated[str | None, typer.Option("--group", help="Consumer group (default: kafka.group_id).")] = None,
    http_port: Annotated[int | None, typer.Option("--http-port", help="Port of /healthz, /readyz, /metrics.")] = None,
) -> None:
    """Run the recognition daemon: Kafka audio in, play events out (SIGTERM stops it cleanly)."""
    import signal
    import threading

    from streamd.daemon.runner import Daemon
    from streamd.logs import configure_logging

    config = get_config(store__catalog=catalog, kafka__group_id=group, daemon__http_port=http_port)
    configure_logging(config)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    raise typer.Exit(Daemon(config, stop=stop).run())


@app.command()
def index(
    paths: Annotated[list[Path] | None, typer.Argument(help="Audio files, or folders searched recursively.")] = None,
    catalog: Annotated[str | None, typer.Option("--catalog", help="Catalog name (default: store.catalog).")] = None,
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="CSV with track_id and path (or relative_path) columns plus metadata."),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Decode + encode in N processes.")] = 1,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Index into a new version; switch to it atomically when done.")
    ] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="Overwrite stored tracks whose id comes from another file.")
    ] = False,
) -> None:
    """Index audio files into a catalog in Redis (resumable; unchanged files are skipped)."""
    from streamd.indexer import format_report, index_paths

    config = get_config(store__catalog=catalog)
    report = index_paths(config, config.store.catalog, paths or [], manifest=manifest, workers=workers,
                         rebuild=rebuild, replace=replace, show_progress=True)
    console = Console()
    for line in format_report(report):
        console.print(line, highlight=False, markup=False)
    if report.failed:
        raise typer.Exit(1)


@app.command()
def recognize(
    source: Annotated[str, typer.Argument(help="Audio file or HTTP/Icecast URL (anything FFmpeg reads).")],
    catalog: Annotated[str | None, typer.Option("--catalog", help="Catalog name (default: store.catalog).")] = None,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object per play instead of a table.")] = False,
    stream_id: Annotated[str | None, typer.Option("--stream-id", help="Stream id in the output (default: the file name).")] = None,
) -> None:
    """Recognize catalog tracks in a file or radio URL, without Kafka (the daemon's pipeline)."""
    import json

    from rich.table import Table

    from streamd.daemon.recognize import recognize as run_recognize
    from streamd.model import load_fingerprinter
    from streamd.store.replica import Replica

    config = get_config(store__catalog=catalog)
    fp = load_fingerprinter(config.model)
    replica = Replica.from_config(config).start()
    console = Console()
    sid = stream_id or Path(source).stem or "recognize"
    try:
        if replica.size == 0:
            err_console.print(f"warning: catalog {config.store.catalog!r} is empty or missing", highlight=False)
        on_play = (lambda line: print(json.dumps(line), flush=True)) if json_lines else None
        lines = run_recognize(config, source, replica, fp, stream_id=sid, on_play=on_play)
    finally:
        replica.stop()
    if not json_lines:
        table = Table(title=f"{len(lines)} play(s) in {source}")
        for column in ("track", "start", "end", "offset", "confidence"):
            table.add_column(column, justify="left" if column == "track" else "right")
        for line in lines:
            table.add_row(line["track_id"], f"{line['start_s']:.1f}", f"{line['end_s']:.1f}",
                          f"{line['offset_s']:.1f}", f"{line['confidence']:.2f}")
        console.print(table)


@app.command()
def train(
    config_file: Annotated[Path | None, typer.Option("--config-file", help="Training YAML (e.g. models/train.yaml).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run folder (default runs/<name>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")] = False,
    preset: Annotated[str | None, typer.Option("--preset", help="Named variant, e.g. ablation-ce, ablation-full.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Override the number of training steps.")] = None,
    init_weights: Annotated[Path | None, typer.Option("--init-weights", help="Warm-start a new run from a .safetensors model.")] = None,
) -> None:
    """Train the hash model (progress bar, checkpoints, resumable, seeded)."""
    from dataclasses import replace

    from streamd.train import load_train_config
    from streamd.train import train as run_training

    cfg = load_train_config(config_file, preset)
    if steps is not None:
        cfg = replace(cfg, steps=steps)
    result = run_training(cfg, out or Path("runs") / cfg.name, resume=resume, init_weights=init_weights)
    err_console.print(f"done: {result}")


@app.command("eval")
def eval_(
    weights: Annotated[Path | None, typer.Option("--weights", help="Model weights (default: model.weights).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full report as JSON here.")] = None,
    queries: Annotated[int, typer.Option("--queries", help="Excerpts per condition (each gives every duration).")] = 100,
    strength: Annotated[float, typer.Option("--strength", help="Degradation strength of random_chain, 0..1.")] = 0.6,
    seed: Annotated[int, typer.Option("--seed")] = 20261128,
    half_hop: Annotated[bool, typer.Option("--half-hop", help="Also index windows half a hop later (2x catalog).")] = False,
    asymmetric: Annotated[bool, typer.Option("--asymmetric", help="Rank by asymmetric distance (relaxed query codes vs catalog bits).")] = False,
    peak_candidates: Annotated[int, typer.Option("--peak-candidates", help="Best-voted tracks the spectral peaks choose among (0: codes only).")] = 10,
    rescore_candidates: Annotated[int, typer.Option("--rescore-candidates", help="Best-voted tracks the re-scoring (peaks + codes along the line) ranks (0: off).")] = 30,
) -> None:
    """Evaluate the hash model: top-1 for 3/5/10/29 s queries, clean and degraded; mAP; false accepts;
    the same with the daemon's peak check choosing among the best-voted tracks; top-1 re-scored."""
    from rich.console import Console

    from streamd.evaluate import EvalConfig, evaluate, format_breakdown, format_table, write_json
    from streamd.model import load_fingerprinter

    config = get_config(model__weights=str(weights) if weights else None)
    fp = load_fingerprinter(config.model)
    report = evaluate(fp, cfg=EvalConfig(queries=queries, strength=strength, seed=seed, half_hop_catalog=half_hop,
                                         asymmetric=asymmetric, peak_candidates=peak_candidates,
                                         rescore_candidates=rescore_candidates, peak_min_agreement=config.daemon.peak_min_agreement))  # fmt: skip
    console = Console(width=None if sys.stdout.isatty() else 140)
    console.print(format_table(report))
    console.print(format_breakdown(report))
    if json_out:
        write_json(report, json_out)


@app.command()
def experiments(
    quick: Annotated[bool, typer.Option("--quick", help="Tiny pipeline check (minutes, numbers not meaningful).")] = False,
    only: Annotated[list[str] | None, typer.Option("--only", help="fig4, fig5, fig6 or bits (repeatable; default all).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default runs/experiments[-quick]).")] = None,
    weights: Annotated[Path | None, typer.Option("--weights", help="Trained model whose trunk is used.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="Torch threads (default 1 quick, 2 full).")] = None,
    publish: Annotated[bool, typer.Option("--publish", help="Write tables into docs/experiments.md and plots into docs/img/.")] = False,
) -> None:
    """Reproduce the paper's experiments: RNN variants, feature maps, hash layer vs KSH/ITQ/LSH, code length."""
    from dataclasses import replace

    from streamd.experiments.runner import FULL, QUICK, STAGES, run_suite

    cfg = QUICK if quick else FULL
    if weights is not None:
        cfg = replace(cfg, weights=str(weights))
    if threads is not None:
        cfg = replace(cfg, threads=threads)
    run_suite(cfg, out or Path("runs") / ("experiments-quick" if quick else "experiments"), tuple(only or STAGES),
              publish_to=Path("docs") if publish else None)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Benchmark to run (a script in bench/); none lists them.")] = None,
) -> None:
    """Run a benchmark script from bench/ (extra arguments are passed to it); results go to bench/RESULTS.md."""
    import subprocess

    bench_dir = Path(__file__).resolve().parent.parent / "bench"
    scripts = sorted(p.stem for p in bench_dir.glob("*.py")) if bench_dir.is_dir() else []
    if not scripts:
        raise StreamdError("no bench/ folder next to the streamd package: run from a source checkout")
    if name is None:
        typer.echo("benchmarks: " + ", ".join(scripts))
        return
    if name not in scripts:
        raise StreamdError(f"unknown benchmark {name!r}; available: {', '.join(scripts)}")
    raise typer.Exit(subprocess.call([sys.executable, str(bench_dir / f"{name}.py"), *ctx.args]))


@app.command()
def demo(
    minutes: Annotated[float, typer.Option(min=0.5, help="Length of each simulated station.")] = 3.0,
    tracks: Annotated[int, typer.Option(min=1, help="Test-split tracks in the demo catalog.")] = 6,
) -> None:
    """Index a demo catalog, stream a simulated broadcast and print live recognitions."""
    from streamd import demo as demo_mod

    demo_mod.run(minutes, tracks)


@app.command()
def simulate(
    catalog_dir: Annotated[Path, typer.Option(help="Catalog music: a folder (corpus with manifest.csv, or any audio), a manifest .csv or a list of paths.")],
    out: Annotated[Path, typer.Option(help="Folder for the station recordings, truth.json and truth.csv.")],
    unknown_dir: Annotated[Path | None, typer.Option(help="Music that is not in the catalog (same forms as --catalog-dir).")] = None,
    catalog_split: Annotated[str | None, typer.Option(help="Only this corpus split (train/val/test) of --catalog-dir.")] = None,
    unknown_split: Annotated[str | None, typer.Option(help="Only this corpus split of --unknown-dir.")] = None,
    hours: Annotated[float, typer.Option(help="Length of each station recording.")] = 1.0,
    streams: Annotated[int, typer.Option(help="Number of stations.")] = 4,
    seed: Annotated[int, typer.Option(help="Same seed and inputs give byte-identical outputs.")] = 0,
    sample_rate: Annotated[int, typer.Option(help="Sample rate of the recordings.")] = 12000,
    format: Annotated[str, typer.Option("--format", help="wav or flac (16-bit mono).")] = "wav",
    clean_stations: Annotated[int, typer.Option(help="How many of the first stations stay undegraded.")] = 1,
    min_strength: Annotated[float, typer.Option(help="Weakest degradation strength of a station (0-1).")] = 0.3,
    max_strength: Annotated[float, typer.Option(help="Strongest degradation strength of a station (0-1).")] = 1.0,
    jobs: Annotated[int, typer.Option(help="Stations rendered at once (worker processes).")] = 1,
    weights: Annotated[str | None, typer.Option(help="Item mix, e.g. catalog=0.55,unknown=0.2,talk=0.1,jingle=0.1,silence=0.05 (the default).")] = None,
) -> None:
    """Write simulated station recordings plus ground truth (see docs/accuracy.md)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from streamd.eval.report import schedule_with_weights, select_sources
    from streamd.eval.simulate import SimulationError
    from streamd.eval.simulate import simulate as run_simulation

    schedule = schedule_with_weights(weights)
    catalog = select_sources(catalog_dir, catalog_split)
    unknown = select_sources(unknown_dir, unknown_split) if unknown_dir is not None else []
    shared = {s.track_id for s in catalog} & {s.track_id for s in unknown}
    if shared:
        raise SimulationError(f"{len(shared)} tracks are both catalog and unknown (e.g. {sorted(shared)[0]}); use the split options")
    console = Console()
    console.print(f"{len(catalog)} catalog and {len(unknown)} unknown tracks; {streams} stations x {hours:g} h -> {out}")
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console,
    ) as progress:  # fmt: skip
        tasks: dict[str, Any] = {}

        def report(stream: str, seconds: float) -> None:
            if stream not in tasks:
                tasks[stream] = progress.add_task(stream, total=hours * 3600)
            progress.update(tasks[stream], completed=seconds)

        truth = run_simulation(
            catalog, unknown, out, hours=hours, streams=streams, seed=seed, sample_rate=sample_rate, fmt=format,
            clean_stations=clean_stations, strength=(min_strength, max_strength), progress=report, jobs=jobs,
            schedule=schedule,
        )  # fmt: skip
    plays = sum(1 for s in truth.segments if s.kind == "catalog")
    console.print(f"wrote {len(truth.stations)} stations, {plays} catalog plays, truth in {out / 'truth.json'}")


@app.command()
def score(
    truth: Annotated[Path, typer.Option(help="truth.json from `streamd simulate` (or its folder).")],
    events: Annotated[Path, typer.Option(help="JSON-lines events from `streamd recognize` or the daemon ('-': stdin).")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full report as JSON here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG timeline of truth vs events here.")] = None,
    plot_stream: Annotated[str | None, typer.Option(help="Station to plot (default: the first).")] = None,
    min_play_s: Annotated[float, typer.Option(help="Plays shorter than this are optional.")] = 30.0,
) -> None:
    """Score play events against ground truth: precision/recall/F1, boundaries, latency, false events."""
    import json

    from streamd.eval.plot import plot_timeline
    from streamd.eval.report import print_report, read_json_lines, wide_console
    from streamd.eval.score import ScoreError, parse_events
    from streamd.eval.score import score as score_events
    from streamd.eval.simulate import load_truth

    truth_dict = load_truth(truth).to_dict()
    stream_end_s = {s["stream"]: s["duration_s"] for s in truth_dict["stations"]}
    parsed = parse_events(read_json_lines(events), stream_end_s)
    report = score_events(truth_dict, parsed, min_play_s=min_play_s)
    print_report(report, wide_console())
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=1) + "\n")
    if plot is not None:
        stream = plot_stream or truth_dict["stations"][0]["stream"]
        if stream not in stream_end_s:
            raise ScoreError(f"--plot-stream {stream} is not in the truth")
        plot_timeline(truth_dict, parsed, stream, plot, min_play_s=min_play_s)


@catalog_app.command("list")
def catalog_list() -> None:
    """List catalogs: tracks, codes, model, version."""
    from streamd.store.catalog import connect, list_catalogs
    from streamd.store.views import catalogs_table

    client = connect(get_config().redis)
    try:
        infos = list_catalogs(client)
    finally:
        client.close()
    if not infos:
        Console().print("no catalogs (create one with `streamd index --catalog NAME PATH...`)")
        return
    Console().print(catalogs_table(infos))


@contextlib.contextmanager
def _existing_catalog(name: str) -> Iterator[tuple[Any, Any]]:
    """The named catalog and its info, on a Redis connection closed afterwards; an error if it is absent."""
    from streamd.store.catalog import Catalog, CatalogError, connect

    client = connect(get_config().redis)
    try:
        catalog = Catalog(client, name)
        info = catalog.info()
        if info is None:
            raise CatalogError(f"catalog {name!r} does not exist (see `streamd catalog list`)")
        yield catalog, info
    finally:
        client.close()


@catalog_app.command("show")
def catalog_show(
    name: Annotated[str, typer.Argument(help="Catalog name.")],
    tracks: Annotated[int, typer.Option("--tracks", min=0, help="How many tracks to list.")] = 20,
) -> None:
    """Show one catalog: model, version, counts and its first tracks."""
    from streamd.store.views import catalog_details

    with _existing_catalog(name) as (catalog, info):
        console = Console()
        for item in catalog_details(catalog, info, tracks):
            console.print(item, highlight=False)


@catalog_app.command("delete")
def catalog_delete(
    name: Annotated[str, typer.Argument(help="Catalog name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete one catalog and all its keys (running daemons empty their copy)."""
    with _existing_catalog(name) as (catalog, info):
        tracks = info.served.tracks if info.served else 0
        if not yes and not typer.confirm(f"delete catalog {name!r} with {tracks} tracks?"):
            raise typer.Exit(1)
        catalog.delete()
    Console().print(f"deleted catalog {name!r}", highlight=False)
