"""`kptune report`: one self-contained HTML page about a perf db and the model registry.

Sections: the db's counts; the model's picks against the optimum on every audited or
exhaustively tuned problem the model served (a scatter, points below the line are misses);
the performance ratio per network (the corpus's networks); the registry's versions over time
with their gate metric. Plots are PNGs embedded as base64, so the page is one file.
"""

from __future__ import annotations

import base64
import collections
import html
import io
import math
from pathlib import Path
from typing import Any

from kptune.corpus import load_corpus
from kptune.kernel import get_family
from kptune.perfdb import PerfDB
from kptune.registry import Registry


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode()


def served_vs_optimal(db: PerfDB, kernel: str = "conv2d_fwd") -> list[dict[str, Any]]:
    """Every problem the model served whose optimum is known (audited, or every config measured)."""
    family = get_family(kernel)
    rows = []
    for (did,) in db.conn.execute("SELECT id FROM devices").fetchall():
        kid = db.kernel_id(family.name, family.source_hash, family.space.names)
        audited = {key: (m, o) for key, m, o in db.audits(did, kid)}
        for pid, key in db.served_problems(did, kid):
            model_ms = db.best_ms_of_source(pid, did, kid, "model")
            best = db.best(pid, did, kid)
            optimum = audited.get(key, (None, None))[1] or (best.time_ms if best else None)
            if model_ms and optimum:
                rows.append({"problem": key, "device_id": did, "model_ms": model_ms, "optimum_ms": optimum,
                             "ratio": min(optimum, model_ms) / model_ms})  # fmt: skip
    return rows


def write_report(db_path: Path, out: Path, registry: Registry | None = None, kernel: str = "conv2d_fwd") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    registry = registry or Registry()
    with PerfDB(db_path) as db:
        summary = db.summary()
        served = served_vs_optimal(db, kernel)
    parts = [f"<h1>kptune report</h1><p>{html.escape(str(db_path))}: "
             + ", ".join(f"{k} {v}" for k, v in summary["counts"].items()) + "</p>"]  # fmt: skip

    fig, ax = plt.subplots(figsize=(5, 5), dpi=90)
    if served:
        xs, ys = [r["optimum_ms"] for r in served], [r["model_ms"] for r in served]
        ax.scatter(xs, ys, s=12)
        lo, hi = min(xs + ys), max(xs + ys)
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("optimum, ms")
    ax.set_ylabel("model's pick, ms")
    ax.set_title(f"{len(served)} served problems with a known optimum")
    parts.append(f"<h2>Predicted against optimal</h2><img src='data:image/png;base64,{_png(fig)}'>")
    plt.close(fig)

    networks: dict[str, list[float]] = collections.defaultdict(list)
    index = {e.problem.key(): e.networks for e in load_corpus()}
    for r in served:
        fp32 = r["problem"].replace("dtype=fp16", "dtype=fp32")
        for net in index.get(fp32, ("(outside the corpus)",)):
            networks[net].append(r["ratio"])
    geo = {n: math.exp(sum(map(math.log, v)) / len(v)) for n, v in sorted(networks.items())}
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=90)
    ax.bar(list(geo), list(geo.values()))
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("geomean ratio")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    parts.append(f"<h2>Performance ratio per network</h2><img src='data:image/png;base64,{_png(fig)}'>")
    plt.close(fig)

    versions = registry.versions()
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=90)
    for key, label in (("ratio_top5_geomean", "model's top 5"), ("autotune_ratio_geomean", "autotune's candidates")):
        points = [(v["version"], v["metrics"][key]) for v in versions if v["metrics"].get(key) is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=label)
    if ax.lines:
        ax.legend()
    ax.set_xlabel("model version")
    ax.set_ylabel("test ratio, geomean")
    fig.tight_layout()
    rows = "".join(f"<tr><td>{v['version']}</td><td>{html.escape(v['device'])}</td><td>{v['created']}</td>"
                   f"<td>{v.get('dataset_hash')}</td><td>{v['metrics'].get('ratio_top5_geomean')}</td>"
                   f"<td>{v['metrics'].get('autotune_ratio_geomean')}</td></tr>" for v in versions)  # fmt: skip
    head = ("<tr><th>version</th><th>device</th><th>created</th><th>data</th><th>ratio top-5</th>"
            "<th>ratio autotune</th></tr>")  # fmt: skip
    parts.append(f"<h2>Model versions</h2><img src='data:image/png;base64,{_png(fig)}'>")
    parts.append(f"<table border=1>{head}{rows}</table>")
    plt.close(fig)
    out.write_text("<!doctype html><meta charset=utf-8><title>kptune report</title>" + "\n".join(parts))
    return out
