"""How catalogs look on a terminal (`streamd catalog list|show`)."""

from __future__ import annotations

import datetime as dt

from rich.table import Column, Table

from streamd.store.catalog import Catalog, CatalogInfo


def _when(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M") if timestamp else "-"


def catalogs_table(infos: list[CatalogInfo]) -> Table:
    table = Table(Column("catalog", overflow="fold"), "tracks", "codes", "bits", Column("model", overflow="fold"),
                  "version", "generation", Column("updated", no_wrap=True), box=None)  # names are folded, never cut
    for info in infos:
        served = info.served
        generation = str(info.generation) + (f" (building {info.building})" if info.building else "")
        table.add_row(info.name, str(served.tracks if served else 0), str(served.codes if served else 0),
                      str(served.bits if served else "-"), served.model_version if served else "-",
                      str(info.version), generation, _when(info.updated_at))
    return table


def catalog_details(catalog: Catalog, info: CatalogInfo, limit: int) -> list[str | Table]:
    """Summary lines plus a table of the first ``limit`` tracks (by id)."""
    served = info.served
    assert served is not None
    lines: list[str | Table] = [
        f"catalog {info.name}: {served.tracks} tracks, {served.codes} codes "
        f"({served.codes * served.bits // 8 / 1e6:.1f} MB of codes)",
        f"made with {served.describe_model()}",
        f"version {info.version}, generation {info.generation}, epoch {info.epoch}",
        f"created {_when(info.created_at)}, updated {_when(info.updated_at)}",
    ]
    if info.rebuild is not None:
        lines.append(f"rebuild under way: generation {info.building} with {info.rebuild.describe_model()}, "
                     f"{info.rebuild.tracks} tracks so far")
    ids = catalog.track_ids(info.generation)
    if ids and limit:
        table = Table(Column("track", overflow="fold"), "title", "artist", "duration", "codes", box=None)
        for track_id in ids[:limit]:
            meta = catalog.track_info(info.generation, track_id)
            duration = float(meta.get("duration_s", 0) or 0)
            table.add_row(track_id, meta.get("title", ""), meta.get("artist", ""),
                          f"{int(duration // 60)}:{duration % 60:04.1f}", meta.get("n_codes", ""))
        lines.append(table)
        if len(ids) > limit:
            lines.append(f"... and {len(ids) - limit} more (--tracks N shows more)")
    return lines
