"""A PNG timeline of one station: what played (truth) above what was reported (events).

Truth lane: catalog plays (blue; missed ones outlined in red), unknown music, talk, jingles,
silence; talk-overs on a thin lane of their own. Event lane: matched events (green), false events
(red, labelled with their class), events on optional short plays (grey).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamd.eval.score import Event, match, plays_from_truth

KIND_COLOURS = {
    "catalog": "#3b6fb6",
    "unknown": "#9aa5b1",
    "talk": "#e0a526",
    "jingle": "#b05fc4",
    "silence": "#f2f2f2",
}
EVENT_COLOURS = {"matched": "#2e9e4f", "false": "#d43d3d", "optional": "#b0b0b0"}


def plot_timeline(
    truth: dict[str, Any],
    events: Sequence[Event],
    stream: str,
    path: Path,
    min_play_s: float = 30.0,
    start_s: float | None = None,
    end_s: float | None = None,
) -> Path:
    """Draw ``stream``'s truth and events between ``start_s`` and ``end_s`` (default: all) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    segments = [s for s in truth["segments"] if s["stream"] == stream]
    if not segments:
        raise ValueError(f"stream {stream!r} is not in the truth")
    lo = 0.0 if start_s is None else start_s
    hi = max(s["end_s"] for s in segments) if end_s is None else end_s
    plays = plays_from_truth(truth["segments"], min_play_s)
    matching = match(plays, events)
    found = {i for i, _ in matching.pairs}
    matched_events = {j for _, j in matching.pairs}

    width = min(60.0, max(10.0, (hi - lo) / 120.0))
    fig, ax = plt.subplots(figsize=(width, 3.2))
    minutes = 1 / 60.0
    for s in segments:
        if s["end_s"] < lo or s["start_s"] > hi:
            continue
        overlay = s.get("layer", "main") == "overlay"
        y, h = (2.55, 0.3) if overlay else (1.6, 0.8)
        ax.broken_barh(
            [(s["start_s"] * minutes, (s["end_s"] - s["start_s"]) * minutes)],
            (y, h),
            facecolors=KIND_COLOURS.get(s["kind"], "#cccccc"),
            edgecolors="white",
            linewidth=0.5,
        )
        if s["kind"] in ("catalog", "unknown") and not overlay:
            ax.text(
                (s["start_s"] + 1) * minutes,
                y + h / 2,
                str(s["track_id"])[-18:],
                fontsize=6,
                va="center",
                clip_on=True,
            )
    for i, p in enumerate(plays):
        if p.stream == stream and p.required and i not in found:
            ax.broken_barh(
                [(p.start_s * minutes, p.duration_s * minutes)],
                (1.6, 0.8),
                facecolors="none",
                edgecolors=EVENT_COLOURS["false"],
                linewidth=2,
                hatch="//",
            )
    for j, e in enumerate(events):
        if e.stream != stream or e.end_s < lo or e.start_s > hi:
            continue
        status = "matched" if j in matched_events else "false" if j in matching.false else "optional"
        ax.broken_barh(
            [(e.start_s * minutes, (e.end_s - e.start_s) * minutes)],
            (0.4, 0.8),
            facecolors=EVENT_COLOURS[status],
            edgecolors="white",
            linewidth=0.5,
        )
        label = e.track_id[-18:] + (f" ({matching.false[j]})" if status == "false" else "")
        ax.text((e.start_s + 1) * minutes, 0.8, label, fontsize=6, va="center", clip_on=True)
        if e.detected_at_s is not None:
            ax.plot([e.detected_at_s * minutes] * 2, [0.35, 1.25], color="black", linewidth=0.8)
    ax.set_xlim(lo * minutes, hi * minutes)
    ax.set_ylim(0.2, 3.0)
    ax.set_yticks([0.8, 2.0, 2.7], ["events", "truth", "talk-over"])
    ax.set_xlabel("station time (minutes)")
    ax.set_title(f"{stream}: truth vs events (black tick: detection time)")
    handles = [Patch(color=c, label=k) for k, c in KIND_COLOURS.items()]
    handles += [Patch(color=c, label=f"event {k}") for k, c in EVENT_COLOURS.items()]
    handles.append(Patch(facecolor="none", edgecolor=EVENT_COLOURS["false"], hatch="//", label="missed play"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=len(handles), fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
