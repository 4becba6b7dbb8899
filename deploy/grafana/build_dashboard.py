"""Generate the streamd Grafana dashboard (deploy/grafana/dashboards/streamd.json) from code.

Every panel and its PromQL live in :data:`SECTIONS`, one list that the tests import: they check
that each expression parses and returns series when a real Prometheus scrapes streamd's metric
registry (tests/test_deploy.py), and the daemon's end-to-end test runs the same list against a
running ``streamd run``. Metric names are those of streamd/metrics.py.

Two kinds of panel only have data in some deployments, and say so in ``requires``:
``"top_streams"`` (per-station views, need ``daemon.metrics_top_streams > 0``) and ``"gpu"``
(need ``model.device`` to be CUDA).

    python deploy/grafana/build_dashboard.py     # rewrite the JSON after editing this file
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "streamd.json"
UID = "streamd-overview"
SEL = 'job=~"$job", instance=~"$instance"'
"""The matcher every query carries: the dashboard's job and instance variables."""
RATE = "$__rate_interval"
HOP_S = 1.024
"""The daemon's hop (48 frames at 12 kHz, hop 256): a hop's decision is due every 1.024 s."""
DECISION_DELAY_LIMIT_S = HOP_S + 0.5
"""Chunk-to-decision delay above this means inference is falling behind (alert and threshold line)."""
TEMPLATE_VALUES = {RATE: "1m", "$job": ".+", "$instance": ".+"}
"""What the Grafana variables become when the tests run an expression outside Grafana."""


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False
    heatmap: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # timeseries | stat | bargauge | heatmap | table
    width: int = 8
    height: int = 8
    requires: str | None = None  # None | "top_streams" | "gpu"
    thresholds: tuple[float, ...] = ()  # red above each (drawn as lines on time series)
    stack: bool = False


def m(name: str, *raw_matchers: str, **matchers: str) -> str:
    """``name{job=~"$job", instance=~"$instance", <raw matchers>, k="v", ...}``."""
    extra = "".join(f", {raw}" for raw in raw_matchers) + "".join(f', {k}="{v}"' for k, v in matchers.items())
    return f"{name}{{{SEL}{extra}}}"


def rate(name: str, by: str = "instance", *raw_matchers: str, **matchers: str) -> str:
    return f"sum by ({by}) (rate({m(name, *raw_matchers, **matchers)}[{RATE}]))"


def quantiles(histogram: str, qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> tuple[Query, ...]:
    """One query per quantile, over all selected instances, from a histogram's buckets."""
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by (le) (rate({m(histogram + '_bucket')}[{RATE}])))",
            f"p{round(q * 100)}",
        )
        for q in qs
    )


def mean(histogram: str, by: str = "instance") -> str:
    return f"{rate(histogram + '_sum', by)} / {rate(histogram + '_count', by)}"


SECTIONS: list[tuple[str, list[Panel]]] = [
    (
        "Overview",
        [
            Panel(
                "Active streams",
                "Streams with a rolling buffer, all selected pods.",
                (Query(f"sum(streamd_active_streams{{{SEL}}})"),),
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Chunks / s",
                "Audio chunks consumed from Kafka per second, all selected pods.",
                (Query(f"sum(rate({m('streamd_chunks_consumed_total')}[{RATE}]))"),),
                unit="cps",
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Plays started / min",
                "Play events of type started per minute.",
                (Query(f"60 * sum(rate({m('streamd_recognitions_total', type='started')}[{RATE}]))"),),
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Consumer lag",
                "Records behind the log end, summed over partitions (max per partition "
                "across pods, so a partition reported twice during a rebalance counts once).",
                (Query(f"sum(max by (partition) ({m('streamd_consumer_lag_messages')}))"),),
                kind="stat",
                width=4,
                height=4,
                thresholds=(4000,),
            ),
            Panel(
                "Decision delay p99",
                f"Chunk capture to decision; above {DECISION_DELAY_LIMIT_S:.3f} s "
                "(hop + 0.5 s) the daemon falls behind.",
                (
                    Query(
                        f"histogram_quantile(0.99, sum by (le) (rate({m('streamd_decision_delay_seconds_bucket')}[{RATE}])))"
                    ),
                ),
                unit="s",
                kind="stat",
                width=4,
                height=4,
                thresholds=(DECISION_DELAY_LIMIT_S,),
            ),
            Panel(
                "Pods up",
                "Scrape targets of the selected job that answer.",
                (Query(f"sum(up{{{SEL}}})"),),
                kind="stat",
                width=4,
                height=4,
            ),
        ],
    ),
    (
        "Throughput",
        [
            Panel(
                "Chunks consumed / s",
                "Audio chunks taken from Kafka, per pod.",
                (Query(rate("streamd_chunks_consumed_total"), "{{instance}}"),),
                unit="cps",
                stack=True,
            ),
            Panel(
                "Bytes consumed / s",
                "Chunk payload bytes taken from Kafka, per pod.",
                (Query(rate("streamd_bytes_consumed_total"), "{{instance}}"),),
                unit="Bps",
                stack=True,
            ),
            Panel(
                "Active streams and open plays",
                "Streams with a buffer, and plays started but not yet ended.",
                (
                    Query(f"sum by (instance) ({m('streamd_active_streams')})", "streams {{instance}}"),
                    Query(f"sum by (instance) ({m('streamd_open_plays')})", "open plays {{instance}}"),
                ),
            ),
            Panel(
                "Hops / s",
                "Windows hashed per second (one per stream per 1.024 s hop).",
                (Query(rate("streamd_hops_total"), "{{instance}}"),),
                unit="ops",
                stack=True,
            ),
            Panel(
                "Buffer fill",
                "Mean fill (0..1) of the stream buffers at each hop; low after restarts and "
                "rebalances while buffers refill.",
                (Query(mean("streamd_buffer_fill_ratio"), "{{instance}}"),),
                unit="percentunit",
            ),
            Panel(
                "Gap fill / s",
                "Seconds of audio synthesised per second to bridge short gaps in streams.",
                (Query(rate("streamd_gap_fill_seconds_total"), "{{instance}}"),),
                unit="s",
            ),
        ],
    ),
    (
        "Kafka consumer",
        [
            Panel(
                "Consumer lag per partition",
                "Log end offset minus consumer position, per partition of "
                "streamd.audio (as reported by the pod that owns it).",
                (
                    Query(
                        f"max by (partition) ({m('streamd_consumer_lag_messages')})",
                        "partition {{partition}}",
                    ),
                ),
                width=12,
                thresholds=(4000,),
            ),
            Panel(
                "Commit lag and commits",
                "Records processed but not committed; commits and failed commits per second.",
                (
                    Query(
                        f"sum by (instance) ({m('streamd_commit_lag_messages')})", "uncommitted {{instance}}"
                    ),
                    Query(rate("streamd_commits_total"), "commits/s {{instance}}"),
                    Query(rate("streamd_commit_failures_total"), "failed commits/s {{instance}}"),
                ),
                width=12,
            ),
        ],
    ),
    (
        "Latency",
        [
            Panel(
                "Inference latency",
                "Model forward time per batch (quantiles over all selected pods).",
                quantiles("streamd_inference_seconds"),
                unit="s",
            ),
            Panel(
                "Lookup latency",
                "Catalog Hamming search time per batch.",
                quantiles("streamd_lookup_seconds"),
                unit="s",
            ),
            Panel(
                "Chunk-to-decision delay",
                "From a chunk's capture time to the decision on its hop. The red "
                f"line is hop + 0.5 s = {DECISION_DELAY_LIMIT_S:.3f} s.",
                quantiles("streamd_decision_delay_seconds"),
                unit="s",
                thresholds=(DECISION_DELAY_LIMIT_S,),
            ),
            Panel(
                "Main-loop pauses",
                "What stops a pod's main loop besides inference: full garbage collections (mean per "
                "pod) and offset commits with their state saves (p99 over all pods).",
                (
                    Query(mean("streamd_gc_pause_seconds", "instance, generation"), "GC gen {{generation}} {{instance}}"),
                    Query(
                        f"histogram_quantile(0.99, sum by (le) (rate({m('streamd_commit_seconds_bucket')}[{RATE}])))",
                        "commit p99",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Batch size",
                "Windows per inference batch: mean per pod and p99 over all pods.",
                (
                    Query(mean("streamd_batch_size"), "mean {{instance}}"),
                    Query(
                        f"histogram_quantile(0.99, sum by (le) (rate({m('streamd_batch_size_bucket')}[{RATE}])))",
                        "p99",
                    ),
                ),
            ),
            Panel(
                "Inference backlog",
                "Hops waiting for inference; above zero for long means the model cannot keep up.",
                (Query(f"sum by (instance) ({m('streamd_backlog_hops')})", "{{instance}}"),),
            ),
            Panel(
                "Work shed / s",
                "Hops and chunks dropped under overload.",
                (Query(rate("streamd_shed_total", "what"), "{{what}}"),),
                unit="ops",
            ),
        ],
    ),
    (
        "Recognitions",
        [
            Panel(
                "Recognitions by type / min",
                "Play events decided per minute: started and ended.",
                (Query(f"60 * {rate('streamd_recognitions_total', 'type')}", "{{type}}"),),
                stack=True,
            ),
            Panel(
                "Confidence of ended plays",
                "Distribution of play confidence (0..1).",
                (
                    Query(
                        f"sum by (le) (increase({m('streamd_recognition_confidence_bucket')}[{RATE}]))",
                        "{{le}}",
                        heatmap=True,
                    ),
                ),
                kind="heatmap",
            ),
            Panel(
                "Plays per station, last hour (top N)",
                "Recognitions per stream in the last hour, from the "
                "opt-in top-N view (daemon.metrics_top_streams > 0): only the N busiest streams per pod appear.",
                (
                    Query(
                        f"topk(20, sum by (stream_id) (delta({m('streamd_top_stream_recognitions')}[1h])))",
                        "{{stream_id}}",
                        instant=True,
                    ),
                ),
                kind="bargauge",
                requires="top_streams",
            ),
            Panel(
                "Recognitions per station since pod start (top N)",
                "Opt-in top-N view: recognitions per stream "
                "since the owning pod started (or the stream moved to it).",
                (
                    Query(
                        f"topk(20, sum by (stream_id) ({m('streamd_top_stream_recognitions')}))",
                        "{{stream_id}}",
                    ),
                ),
                width=12,
                requires="top_streams",
            ),
            Panel(
                "Dropped chunks per station (top N)",
                "Opt-in top-N view: chunk errors per stream since pod start.",
                (Query(f"topk(20, sum by (stream_id) ({m('streamd_top_stream_errors')}))", "{{stream_id}}"),),
                width=12,
                requires="top_streams",
            ),
        ],
    ),
    (
        "Errors",
        [
            Panel(
                "Chunk errors by reason / s",
                "Chunks dropped for protocol or decode errors.",
                (Query(rate("streamd_chunk_errors_total", "reason"), "{{reason}}"),),
                unit="cps",
                stack=True,
            ),
            Panel(
                "Chunk error ratio",
                "Dropped records as a fraction of all records (valid chunks + errors), per pod.",
                (
                    Query(
                        f"{rate('streamd_chunk_errors_total')} / ({rate('streamd_chunks_consumed_total')} "
                        f"+ {rate('streamd_chunk_errors_total')} > 0)",
                        "{{instance}}",
                    ),
                ),
                unit="percentunit",
                thresholds=(0.01,),
            ),
            Panel(
                "Dead-lettered records / s",
                "Records that are not valid chunks, parked on the dead-letter topic with a reason header: "
                'every chunk error except reason="invalid" (samples the front end rejects, not dead-lettered).',
                (
                    Query(
                        rate("streamd_chunk_errors_total", "instance", 'reason!="invalid"'),
                        "{{instance}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Discontinuities by kind / s",
                "Duplicates, late chunks, sequence gaps, timestamp jumps, buffer resets.",
                (Query(rate("streamd_discontinuities_total", "kind"), "{{kind}}"),),
                unit="ops",
                stack=True,
            ),
        ],
    ),
    (
        "Events",
        [
            Panel(
                "Events published / s",
                "Play events acknowledged by Kafka.",
                (Query(rate("streamd_events_published_total"), "{{instance}}"),),
                unit="ops",
                width=12,
            ),
            Panel(
                "Events failed / s",
                "Play events Kafka did not take, by reason.",
                (Query(rate("streamd_events_failed_total", "reason"), "{{reason}}"),),
                unit="ops",
                width=12,
            ),
        ],
    ),
    (
        "Catalog",
        [
            Panel(
                "Catalog version",
                "Version of the catalog each pod has loaded; pods should agree.",
                (
                    Query(
                        f"max by (instance, catalog) ({m('streamd_catalog_version')})",
                        "{{catalog}} {{instance}}",
                    ),
                ),
            ),
            Panel(
                "Catalog size",
                "Codes and tracks in the loaded catalog.",
                (
                    Query(f"max by (catalog) ({m('streamd_catalog_codes')})", "codes {{catalog}}"),
                    Query(f"max by (catalog) ({m('streamd_catalog_tracks')})", "tracks {{catalog}}"),
                ),
            ),
            Panel(
                "Replica sync delay",
                "Age of each pod's local catalog replica relative to Redis.",
                (Query(f"max by (instance) ({m('streamd_replica_sync_delay_seconds')})", "{{instance}}"),),
                unit="s",
                thresholds=(300,),
            ),
        ],
    ),
    (
        "Resources",
        [
            Panel(
                "CPU",
                "CPU cores used per pod (the pod has 2).",
                (Query(rate("process_cpu_seconds_total"), "{{instance}}"),),
                thresholds=(2,),
            ),
            Panel(
                "Resident memory",
                "Process RSS per pod (limit 4 GiB on CPU pods).",
                (Query(f"sum by (instance) ({m('process_resident_memory_bytes')})", "{{instance}}"),),
                unit="bytes",
            ),
            Panel(
                "Main loop tick age",
                "Seconds since the daemon loop last ticked; /healthz fails past daemon.health_stall_s.",
                (
                    Query(
                        f"time() - max by (instance) ({m('streamd_loop_last_tick_timestamp_seconds')})",
                        "{{instance}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "GPU memory",
                "torch.cuda memory allocated and reserved per device (CUDA pods only).",
                (
                    Query(
                        f"sum by (instance, device) ({m('streamd_gpu_memory_allocated_bytes')})",
                        "allocated {{instance}}/{{device}}",
                    ),
                    Query(
                        f"sum by (instance, device) ({m('streamd_gpu_memory_reserved_bytes')})",
                        "reserved {{instance}}/{{device}}",
                    ),
                ),
                unit="bytes",
                width=12,
                requires="gpu",
            ),
            Panel(
                "GPU utilisation",
                "GPU busy fraction per device (CUDA pods with NVML only).",
                (
                    Query(
                        f"max by (instance, device) ({m('streamd_gpu_utilization_ratio')})",
                        "{{instance}}/{{device}}",
                    ),
                ),
                unit="percentunit",
                width=12,
                requires="gpu",
            ),
            Panel(
                "Versions",
                "streamd and model version of each pod.",
                (
                    Query(
                        f"max by (instance, version, model_version) ({m('streamd_build_info')})", instant=True
                    ),
                ),
                kind="table",
                width=24,
                height=5,
            ),
        ],
    ),
]
PANELS: list[Panel] = [panel for _, panels in SECTIONS for panel in panels]


def expressions(exclude_requires: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Every query of the dashboard, as written (with Grafana variables), in panel order."""
    return [q.expr for p in PANELS if p.requires not in exclude_requires for q in p.queries]


def concrete(expr: str) -> str:
    """``expr`` with the Grafana variables replaced, so plain Prometheus can run it."""
    for variable, value in TEMPLATE_VALUES.items():
        expr = expr.replace(variable, value)
    return expr


# --- Grafana JSON ------------------------------------------------------------------------------

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _field_config(panel: Panel) -> dict:
    steps = [{"color": "green", "value": None}] + [{"color": "red", "value": t} for t in panel.thresholds]
    defaults: dict = {"unit": panel.unit, "thresholds": {"mode": "absolute", "steps": steps}}
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10 if panel.stack else 0,
            "showPoints": "never",
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
            "thresholdsStyle": {"mode": "line" if panel.thresholds else "off"},
        }
        defaults["min"] = 0
    if panel.kind in ("stat", "bargauge"):
        defaults["color"] = {"mode": "thresholds"}
    return {"defaults": defaults, "overrides": []}


def _options(panel: Panel) -> dict:
    if panel.kind == "timeseries":
        return {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    if panel.kind == "stat":
        return {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
        }
    if panel.kind == "bargauge":
        return {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "horizontal",
            "displayMode": "gradient",
        }
    if panel.kind == "heatmap":
        return {
            "calculate": False,
            "yAxis": {"axisPlacement": "left", "unit": "percentunit"},
            "color": {"mode": "scheme", "scheme": "Oranges"},
            "cellGap": 1,
        }
    return {"showHeader": True}


def _target(query: Query, ref: str) -> dict:
    target = {
        "datasource": DATASOURCE,
        "refId": ref,
        "expr": query.expr,
        "legendFormat": query.legend,
        "range": not query.instant,
        "instant": query.instant,
    }
    if query.heatmap:
        target["format"] = "heatmap"
    elif query.instant and not query.legend:
        target["format"] = "table"
    return target


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict:
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description + (f" Needs: {panel.requires}." if panel.requires else ""),
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": [_target(q, chr(ord("A") + i)) for i, q in enumerate(panel.queries)],
        "fieldConfig": _field_config(panel),
        "options": _options(panel),
    }


def _variables() -> list[dict]:
    def query_variable(name: str, label: str, query: str, all_value: str) -> dict:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DATASOURCE,
            "query": {"query": query, "refId": f"{name}-variable"},
            "definition": query,
            "refresh": 2,
            "sort": 1,
            "multi": True,
            "includeAll": True,
            "allValue": all_value,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        }

    return [
        {
            "name": "datasource",
            "label": "Datasource",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
        },
        query_variable("job", "Job", "label_values(streamd_build_info, job)", ".+"),
        query_variable("instance", "Pod", 'label_values(streamd_build_info{job=~"$job"}, instance)', ".+"),
    ]


def build() -> dict:
    """The dashboard as Grafana's JSON model (schemaVersion 39: Grafana 10.x/11.x)."""
    panels: list[dict] = []
    panel_id, y = 1, 0
    for section, section_panels in SECTIONS:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": section,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id, y = panel_id + 1, y + 1
        x, row_height = 0, 0
        for panel in section_panels:
            if x + panel.width > 24:
                x, y, row_height = 0, y + row_height, 0
            panels.append(_panel_json(panel, panel_id, x, y))
            panel_id, x, row_height = panel_id + 1, x + panel.width, max(row_height, panel.height)
        y += row_height
    return {
        "uid": UID,
        "title": "streamd",
        "description": "Real-time music recognition daemon: throughput, Kafka lag, latency, recognitions, "
        "errors, events, catalog and resources. Generated by deploy/grafana/build_dashboard.py.",
        "tags": ["streamd"],
        "timezone": "utc",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": _variables()},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


def main() -> None:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT} ({len(PANELS)} panels)")


if __name__ == "__main__":
    main()
