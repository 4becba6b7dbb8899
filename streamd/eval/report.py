"""The I/O edge of the evaluation commands: reading sources and events, printing score tables."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from streamd.eval.score import ScoreError
from streamd.eval.simulate import KINDS, Schedule, SimulationError, Source, find_sources

SPLITS = ("train", "val", "test")


def select_sources(location: Path, split: str | None) -> list[Source]:
    """Sources under ``location``; with ``split``, only the tracks of that corpus split
    (:mod:`streamd.dataset`, which needs ``location`` to be the corpus folder with its manifest)."""
    track_ids = None
    if split is not None:
        if split not in SPLITS:
            raise SimulationError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        from streamd import dataset

        if not (Path(location) / "manifest.csv").exists():
            raise SimulationError(f"--*-split needs a corpus folder with manifest.csv; {location} has none")
        track_ids = {track.track_id for track in dataset.load_split(Path(location))[split]}
    sources = find_sources(Path(location), track_ids)
    if not sources:
        raise SimulationError(f"no audio found in {location}" + (f" for split {split}" if split else ""))
    return sources


def schedule_with_weights(text: str | None) -> Schedule:
    """The default :class:`Schedule`, or one with the item mix ``"catalog=0.5,unknown=0.3,..."``
    (kinds left out are never scheduled)."""
    if not text:
        return Schedule()
    weights = []
    for part in text.split(","):
        kind, _, value = part.partition("=")
        kind = kind.strip()
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if kind not in KINDS or weight < 0:
            raise SimulationError(
                f"--weights: {part!r} is not KIND=WEIGHT with KIND one of {', '.join(KINDS)}"
            )
        weights.append((kind, weight))
    if not any(w > 0 and k in ("catalog", "unknown") for k, w in weights):
        raise SimulationError("--weights: give catalog or unknown music a positive weight")
    return Schedule(weights=tuple(weights))


def read_json_lines(path: Path | str) -> Iterator[dict[str, Any]]:
    """Records of a JSON-lines file (``-`` reads standard input); blank lines are skipped."""
    try:
        handle = sys.stdin if str(path) == "-" else open(path)  # noqa: SIM115
    except OSError as exc:
        raise ScoreError(f"cannot read events {path}: {exc.strerror}") from exc
    with handle if handle is not sys.stdin else _no_close(handle):
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ScoreError(f"{path}:{number}: not JSON: {exc.msg}") from exc
            if not isinstance(record, dict):
                raise ScoreError(f"{path}:{number}: expected a JSON object per line")
            yield record


@contextmanager
def _no_close(handle: Any) -> Iterator[Any]:
    yield handle


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


SHORT_NAMES = {
    "plays": "plays",
    "found": "found",
    "precision": "P",
    "recall": "R",
    "f1": "F1",
    "boundary_p95_s": "bound p95",
    "latency_median_s": "lat med",
    "false_events": "false",
    "false_non_catalog_per_24h": "nc FP/24h",
}


def _summary_table(title: str, rows: dict[str, dict[str, Any]], label: str) -> Table:
    table = Table(title=title, title_justify="left", caption_justify="left")
    table.add_column(label, no_wrap=True)
    for name in SHORT_NAMES.values():
        table.add_column(name, justify="right", no_wrap=True)
    for name, summary in rows.items():
        table.add_row(name, *(_fmt(summary.get(column)) for column in SHORT_NAMES))
    table.caption = "bound: |boundary error| s; lat: detection latency s; nc FP/24h: false events per 24 h of non-catalog audio"
    return table


def wide_console(min_width: int = 120) -> Console:
    """A console at least ``min_width`` columns wide, so tables are not cut when piped to a file."""
    console = Console()
    return console if console.width >= min_width else Console(width=min_width)


def print_report(report: dict[str, Any], console: Console) -> None:
    """The overall numbers against the targets, then the breakdowns."""
    overall = report["overall"]
    table = Table(title=f"Plays >= {report['min_play_s']:g} s, {report['mode']} events", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    targets = report["targets"]
    for key in (
        "plays", "optional_plays", "events", "found", "missed", "false_events", "precision", "recall", "f1",
        "start_error_median_s", "start_error_p95_s", "end_error_median_s", "end_error_p95_s",
        "boundary_median_s", "boundary_p95_s", "offset_error_p95_s", "latency_median_s", "latency_p95_s",
        "hours", "non_catalog_hours", "false_non_catalog_per_24h",
    ):  # fmt: skip
        target = targets.get(key)
        verdict = ""
        if target is not None:
            mark = {True: "[green]met[/]", False: "[red]missed[/]", None: "n/a"}[target["met"]]
            verdict = f"{target['target']} {mark}"
        table.add_row(key, _fmt(overall.get(key)), verdict)
    console.print(table)
    if overall["false_by_class"]:
        console.print(
            "false events by class: " + ", ".join(f"{k} {v}" for k, v in overall["false_by_class"].items())
        )
    console.print(
        _summary_table("By degradation in the station chain", report["by_degradation"], "degradation")
    )
    conditions = Table(title="By play condition", title_justify="left")
    for column in ("condition", "plays", "found", "recall", "boundary p95 s", "latency median s"):
        conditions.add_column(column, justify="right" if column != "condition" else "left")
    for name, row in report["by_condition"].items():
        conditions.add_row(
            name, *(_fmt(row[k]) for k in ("plays", "found", "recall", "boundary_p95_s", "latency_median_s"))
        )
    console.print(conditions)
    console.print(_summary_table("By station", report["by_station"], "stream"))
    for stream, row in report["by_station"].items():
        console.print(f"  {stream}: {row['chain']}", soft_wrap=True)
