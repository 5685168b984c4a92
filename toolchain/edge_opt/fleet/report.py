"""Reports of one collection: terminal table, CSV, JSON, and a self-contained HTML page with plots.

The HTML embeds its plots as PNG data URIs, so it is one file to mail, archive or put on a screen. Plots:
latency by device × precision × format, accuracy against latency with the Pareto front, and the spread of every
device's latency samples (normalised per artifact, so a noisy or throttling device stands out).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from edge_agent.contract.result import strict_json
from rich.table import Table

from edge_opt import evalset
from edge_opt.fleet.outliers import outlier_devices
from edge_opt.fleet.results import ResultsStore

COLUMNS = (
    "device",
    "artifact",
    "model",
    "precision",
    "format",
    "state",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "throughput_per_s",
    "host_accuracy",
    "device_accuracy",
    "device_agreement",
    "device_max_abs_diff",
    "peak_rss_mib",
    "disturbed",
    "error",
    "run_id",
)


def collection_rows(results: ResultsStore, collection: str) -> list[dict[str, Any]]:
    """One row per device × artifact (:meth:`ResultsStore.collection_rows`), with what the device computed on the
    evaluation set beside the host's figures."""
    rows = []
    for stored in results.collection_rows(collection):
        row = {k: v for k, v in stored.items() if k not in ("manifest", "result")}
        check = _device_check(stored.get("result"), stored.get("manifest"))
        at = list(row).index("size_bytes")  # the device's figures follow the host's accuracy, as the table reads
        items = list(row.items())
        rows.append(dict(items[:at] + list(check.items()) + items[at:]))
    return rows


def _device_check(result: dict[str, Any] | None, manifest: dict[str, Any] | None) -> dict[str, Any]:
    """What the device computed on the evaluation set (edge_agent.worker.evaluation), and flags beyond the gates."""
    evaluation = (result or {}).get("evaluation") or {}
    record = (manifest or {}).get("host_metrics", {}).get("device_evaluation") or {}
    return {
        "device_accuracy": evaluation.get("top1_accuracy") if not evaluation.get("error") else None,
        "device_agreement": evaluation.get("agreement_with_host"),
        "device_max_abs_diff": evaluation.get("max_abs_diff"),
        "device_samples": evaluation.get("samples"),
        "host_accuracy_same_items": record.get("host_accuracy"),
        "device_flags": evalset.flags(evaluation, record.get("reference_scale")),
    }


#: The results table's columns, in the terminal and in HTML. "device acc" is the device's own top-1 accuracy on
#: the evaluation set; "host (same)" the host's on the same images; "agree" the device's top-1 agreement with the
#: host's outputs.
HEADERS = (
    "device",
    "artifact",
    "state",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "items/s",
    "host acc",
    "device acc",
    "host (same)",
    "agree",
    "max diff",
    "note",
)


def terminal_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in HEADERS:
        table.add_column(col, justify="left" if col in ("device", "artifact", "state", "note") else "right")
    outliers = outlier_devices(rows)
    for r in rows:
        table.add_row(*_cells(r, outliers))
    return table


def _cells(r: dict[str, Any], outliers: dict[str, float]) -> list[str]:
    """One row of the results table, as text: the same in the terminal and in HTML."""
    note = r["error"] or ("disturbed" if r["disturbed"] else "")
    if r.get("device_flags"):
        note = (note + "; " if note else "") + "outputs disagree: " + "; ".join(r["device_flags"])
    if r["device"] in outliers:
        note = (note + "; " if note else "") + f"outlier: {outliers[r['device']]:.1f}× its peers"
    return [
        r["device"],
        r["artifact"],
        r["state"],
        _f(r["p50_ms"]),
        _f(r["p90_ms"]),
        _f(r["p99_ms"]),
        _f(r["throughput_per_s"], 0),
        _pct(r["host_accuracy"]),
        _pct(r.get("device_accuracy")),
        _pct(r.get("host_accuracy_same_items")),
        _pct(r.get("device_agreement")),
        "-" if r.get("device_max_abs_diff") is None else f"{r['device_max_abs_diff']:.2g}",
        note,
    ]


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_json(rows: list[dict[str, Any]], path: Path) -> None:
    slim = [{k: r.get(k) for k in (*COLUMNS, "sha256")} for r in rows]
    path.write_text(strict_json(slim) + "\n", encoding="utf-8")


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _plots(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["state"] == "SUCCEEDED" and r["p50_ms"]]
    if not ok:
        return []
    plots = []
    devices = sorted({r["device"] for r in ok})
    from edge_opt.fleet.winners import device_winners, heatmap_png

    picks = device_winners(rows)
    plots.append(("Latency by device × candidate, relative to the device's fastest; ★ the pick", _png(heatmap_png(rows, picks))))

    per_artifact: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        per_artifact[r["artifact"]].append(r)
    points = [
        (statistics.median(r["p50_ms"] for r in rs), rs[0]["host_accuracy"] * 100, name)
        for name, rs in per_artifact.items()
        if rs[0]["host_accuracy"] is not None
    ]
    if points:
        fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
        for latency, accuracy, name in points:
            ax.scatter(latency, accuracy, s=50)
            ax.annotate(name, (latency, accuracy), fontsize=8, xytext=(4, 3), textcoords="offset points")
        front, best = [], -1.0
        for latency, accuracy, _ in sorted(points):
            if accuracy > best:
                front.append((latency, accuracy))
                best = accuracy
        ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="tab:green", label="Pareto front")
        ax.set(xlabel="fleet median p50 latency (ms, log)", ylabel="host accuracy (%)", title="accuracy vs latency", xscale="log")
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
        plots.append(("Accuracy against latency", _png(fig)))

    medians = {name: statistics.median(r["p50_ms"] for r in rs) for name, rs in per_artifact.items()}
    spread = [
        [s / medians[r["artifact"]] for r in ok if r["device"] == d for s in (r["samples_ms"] or [r["p50_ms"]])] for d in devices
    ]
    fig, ax = plt.subplots(figsize=(max(8, len(devices) * 1.0), 4.5), constrained_layout=True)
    ax.boxplot(spread, showfliers=False)
    ax.set_xticks(range(1, len(devices) + 1), devices, rotation=30, ha="right")
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set(ylabel="latency ÷ fleet median of the artifact", title="spread per device (all artifacts, every sample)")
    ax.grid(True, axis="y", alpha=0.3)
    plots.append(("Spread per device", _png(fig)))
    return plots


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;background:#0f172a;color:#e2e8f0}
h1{font-size:22px;margin:0 0 4px} .sub{color:#94a3b8;margin-bottom:18px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:18px}
.card{background:#1e293b;border-radius:10px;padding:12px 16px;min-width:140px}
.card b{display:block;font-size:22px} .card span{color:#94a3b8;font-size:12px}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:14px}
figure{background:#fff;border-radius:10px;margin:0;padding:8px} figure img{width:100%}
figcaption{color:#334155;font-size:13px;padding:4px 6px}
table{border-collapse:collapse;width:100%;margin-top:18px;font-size:13px;background:#1e293b;border-radius:10px}
th,td{padding:6px 10px;text-align:right;border-bottom:1px solid #334155} th{color:#94a3b8;font-weight:600}
td.l,th.l{text-align:left} tr.fail td{color:#fca5a5} tr.out td{color:#fcd34d}
"""


def write_html(rows: list[dict[str, Any]], path: Path, collection: str) -> None:
    outliers = outlier_devices(rows)
    ok = [r for r in rows if r["state"] == "SUCCEEDED"]
    devices = sorted({r["device"] for r in rows})
    cards = [
        (str(len(devices)), "devices"),
        (str(len({r["artifact"] for r in rows})), "artifacts"),
        (f"{len(ok)}/{len(rows)}", "runs succeeded"),
        (str(len(outliers)), "outlier devices"),
    ]
    body = [
        f"<h1>edge-opt fleet report — {html.escape(collection)}</h1>",
        f"<div class='sub'>{len(devices)} devices · latency medians per device and artifact · generated by edge-fleet</div>",
        "<div class='cards'>" + "".join(f"<div class='card'><b>{v}</b><span>{k}</span></div>" for v, k in cards) + "</div>",
        "<div class='plots'>",
    ]
    for caption, uri in _plots(rows):
        body.append(
            f"<figure><img alt='{html.escape(caption)}' src='{uri}'><figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    body.append(
        "</div><table><tr>"
        + "".join(f"<th class='{'l' if c in ('device', 'artifact', 'state', 'note') else ''}'>{c}</th>" for c in HEADERS)
        + "</tr>"
    )
    for r in rows:
        css = "fail" if r["state"] != "SUCCEEDED" else ("out" if r["device"] in outliers else "")
        cells = _cells(r, outliers)
        body.append(
            f"<tr class='{css}'>"
            + "".join(f"<td class='{'l' if i in (0, 1, 2, 8) else ''}'>{html.escape(str(c))}</td>" for i, c in enumerate(cells))
            + "</tr>"
        )
    body.append("</table>")
    from edge_opt.fleet.winners import device_winners, winners_table

    winners = winners_table(device_winners(rows))
    if winners:
        heads = ("device", "model", "pick", "p50 ms", "fastest measured", "decision", "noise between runs", "in budget")
        body.append("<table><tr>" + "".join(f"<th class='{'' if h in ('p50 ms', 'in budget') else 'l'}'>{h}</th>" for h in heads)
                    + "</tr>")
        for w in winners:
            cells = [w["device"], w["model"], w["winner"] or "-", _f(w["winner_p50_ms"]), w["fastest"] or "-", w["decision"],
                     w["spread"], f"{w['in_budget']}/{w['candidates']}"]
            body.append("<tr>" + "".join(
                f"<td class='{'' if i in (3, 7) else 'l'}'>{html.escape(str(c))}</td>" for i, c in enumerate(cells)) + "</tr>")
        body.append("</table>")
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>edge-opt fleet — {html.escape(collection)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>"
    )
    path.write_text(page, encoding="utf-8")
