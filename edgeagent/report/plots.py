"""The report's figures, as PNG bytes.

- ``tradeoff_png``: a bundle's variants on quality vs latency per agent step and quality vs
  energy (battery mAh per 100 inferences) on one device, the Pareto front drawn through the
  variants no other beats on both axes, the selected variant starred, the ones the
  constraints reject hollow, and the latency / battery bounds as dashed lines.
- ``profile_png``: the same two panels above the profile run's per-call timings (TTFT and
  the decode after it, stacked, with the medians).

matplotlib is an optional dependency (``pip install 'edgeagent[report]'``) and runs on the
Agg backend, so no display is needed.
"""

from __future__ import annotations

import io
from pathlib import Path
from collections.abc import Sequence
from typing import Any

COLORS = {"fits": "#1f77b4", "rejected": "#9e9e9e", "selected": "#d62728", "front": "#2ca02c",
          "ttft": "#ff7f0e", "decode": "#1f77b4"}


class ReportError(RuntimeError):
    """The report cannot be drawn (matplotlib missing); says what to install."""


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ReportError("--png/--html need matplotlib: pip install 'edgeagent[report]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower or equal cost (x) *and* higher or
    equal quality (y), strictly better in one. Returned in order of increasing cost."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def _quality(row: dict[str, Any]) -> float | None:
    rel = row["quality"]["relative"]
    return None if rel is None else 100.0 * rel


def _tradeoff_axis(ax, rows: Sequence[dict], x_key: str, x_label: str, bound: float | None, bound_label: str,
                   min_quality: float | None, reference: str = "full precision") -> None:
    known = [(r, r["estimate"][x_key], _quality(r)) for r in rows if _quality(r) is not None]
    unknown = [r for r in rows if _quality(r) is None]
    front = pareto_front([(x, y) for _, x, y in known])
    if front:
        xs = [known[i][1] for i in front]
        ys = [known[i][2] for i in front]
        ax.step(xs, ys, where="post", color=COLORS["front"], lw=1.5, alpha=0.8, zorder=1,
                marker="o", markersize=13, markerfacecolor="none", markeredgecolor=COLORS["front"],
                label="Pareto front (no variant better on both axes)")
    for i, (r, x, y) in enumerate(known):
        if r.get("selected"):
            ax.scatter([x], [y], s=260, marker="*", color=COLORS["selected"], zorder=4, label="selected")
        elif r.get("fits"):
            ax.scatter([x], [y], s=70, color=COLORS["fits"], zorder=3, label="fits")
        else:
            ax.scatter([x], [y], s=70, facecolors="none", edgecolors=COLORS["rejected"], lw=1.5, zorder=3,
                       label="rejected")
        # alternate above/below so neighbours' labels do not sit on each other
        ax.annotate(r["id"], (x, y), textcoords="offset points", xytext=(6, 6 if i % 2 == 0 else -13), fontsize=8)
    for r in unknown:  # no measured quality: shown along the bottom, so it is not silently dropped
        ax.annotate(f"{r['id']} (quality unknown)", (r["estimate"][x_key], 0), fontsize=7, color=COLORS["rejected"])
    if bound is not None:
        ax.axvline(bound, color="k", ls="--", lw=0.8, alpha=0.6)
        ax.annotate(bound_label, (bound, 0.02), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                    ha="right", va="bottom", alpha=0.7)
    if min_quality is not None:
        ax.axhline(100 * min_quality, color="k", ls=":", lw=0.8, alpha=0.6)
    ax.margins(x=0.18, y=0.12)  # room for the labels right of the points
    ax.set_xlabel(x_label)
    ax.set_ylabel(f"quality, % of {reference}")
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    seen = {}
    for h, lab in zip(handles, labels):
        seen.setdefault(lab, h)
    ax.legend(seen.values(), seen.keys(), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2,
              frameon=False)  # below the axes: never over a point
    xs = [r["estimate"][x_key] for r in rows]
    if xs and min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")


def _tradeoff_panels(ax_latency, ax_energy, selection: dict[str, Any]) -> None:
    rows = selection["variants"]
    c = selection["constraints"]
    w = selection["workload"]
    basis = {r["quality"]["basis"] for r in rows if r["quality"]["basis"]}
    title_basis = " / ".join(sorted(basis)) or "unknown"
    reference = (selection.get("reference") or {}).get("label") or "full precision"
    _tradeoff_axis(ax_latency, rows, "step_ms",
                   f"latency per agent step, ms ({w['prompt_tokens']}-token prompt + {w['gen_tokens']} tokens)",
                   None, "", c.get("min_quality"), reference)
    _tradeoff_axis(ax_energy, rows, "mah_per_100_inferences", "battery, mAh per 100 inferences",
                   c.get("max_mah_per_100"), "max mAh/100", c.get("min_quality"), reference)
    ax_latency.set_title(f"quality ({title_basis}) vs latency on {selection['profile']} (estimated)", fontsize=10)
    ax_energy.set_title(f"quality vs energy on {selection['profile']} (estimated)", fontsize=10)


def _timings_panel(ax, steps: Sequence[dict], where: str) -> None:
    import statistics

    idx = [s["call"] for s in steps]
    ttft = [s["ttft_ms"] for s in steps]
    decode = [s["decode_ms"] for s in steps]
    ax.bar(idx, ttft, width=0.9, color=COLORS["ttft"], label="TTFT (prompt + first token)")
    ax.bar(idx, decode, width=0.9, bottom=ttft, color=COLORS["decode"], label="decode (remaining tokens)")
    if steps:
        med_total = statistics.median(s["total_ms"] for s in steps)
        med_ttft = statistics.median(ttft)
        ax.axhline(med_total, color="k", ls="--", lw=0.9, label=f"median step {med_total:,.1f} ms")
        ax.axhline(med_ttft, color=COLORS["ttft"], ls=":", lw=1.2, label=f"median TTFT {med_ttft:,.1f} ms")
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("agent inference (model call)")
    ax.set_ylabel("ms")
    ax.set_title(f"per-call timings, measured on {where}", fontsize=10)
    top = max((t + d for t, d in zip(ttft, decode)), default=1.0)
    ax.set_ylim(0, 1.35 * top)  # headroom for the legend above the bars
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_xlim(-1, max(idx, default=0) + 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _png(fig) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def tradeoff_png(selection: dict[str, Any]) -> bytes:
    """Quality vs latency and vs energy of every variant (a ``select_variant`` result)."""
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5.5))
    _tradeoff_panels(a, b, selection)
    fig.suptitle(f"{selection.get('label') or selection['bundle']} on {selection['profile']}", fontsize=11)
    return _png(fig)


def profile_png(result: dict[str, Any], selection: dict[str, Any] | None) -> bytes:
    """The trade-off panels (when the bundle's selection is known) above the run's timings."""
    plt = _pyplot()
    if selection is not None:
        fig = plt.figure(figsize=(13, 10.5))
        grid = fig.add_gridspec(2, 2, height_ratios=[1, 0.9], hspace=0.6)
        _tradeoff_panels(fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), selection)
        ax = fig.add_subplot(grid[1, :])
    else:
        fig, ax = plt.subplots(figsize=(13, 4.5))
    _timings_panel(ax, result["per_step"], result["measured_here"]["where"])
    v = result["variant"]
    fig.suptitle(f"edgeagent profile: {v['id']} on {result['device']} (target profile {result['profile']}), "
                 f"{result['workload']['runs']} inferences", fontsize=11)
    return _png(fig)


def ablation_png(result: dict[str, Any]) -> bytes:
    """Ablation cells on task success (or nothing, for a shape) vs latency and energy on the
    profile's device: the same picture as the variants', one point per cell."""
    plt = _pyplot()
    rows = []
    for cell in result["cells"]:
        if cell.get("missing"):
            continue
        dev = cell["device"]
        rows.append({
            "id": cell["cell"], "selected": result.get("best") is not None and cell["cell"] == result["best"].get("cell"),
            "fits": cell.get("fits", False),
            "quality": {"relative": cell.get("quality_relative"), "basis": cell.get("quality_basis")},
            "estimate": {"step_ms": dev["step_ms"], "mah_per_100_inferences": dev["mah_per_100_inferences"]},
        })
    selection = {"variants": rows, "profile": result["profile"], "bundle": result.get("model", ""),
                 "label": f"ablation of {Path(str(result.get('model', ''))).name}: cells",
                 "constraints": result["constraints"], "workload": result["workload"]}
    if any(r["quality"]["relative"] is not None for r in rows):
        return tradeoff_png(selection)
    return _cost_png(result, rows)


def _cost_png(result: dict[str, Any], rows: list[dict]) -> bytes:
    """No quality to plot (a model shape): memory on the device against latency per step and
    against battery, the Pareto front over the two costs, the memory bound dashed."""
    plt = _pyplot()
    cells = {c["cell"]: c for c in result["cells"] if not c.get("missing")}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    w, c = result["workload"], result["constraints"]
    for ax, key, label in ((axes[0], "step_ms", f"latency per step, ms ({w['prompt_tokens']}-token prompt + "
                                                f"{w['gen_tokens']} tokens)"),
                           (axes[1], "mah_per_100_inferences", "battery, mAh per 100 inferences")):
        pts = [(cells[r["id"]]["device"][key], cells[r["id"]]["device"]["memory_mb"]) for r in rows]
        front = pareto_front([(x, -y) for x, y in pts])
        if front:
            ax.step([pts[i][0] for i in front], [pts[i][1] for i in front], where="post", color=COLORS["front"],
                    lw=1.5, marker="o", markersize=13, markerfacecolor="none", label="Pareto front (cost)")
        for r, (x, y) in zip(rows, pts):
            style = dict(color=COLORS["fits"]) if r["fits"] else dict(facecolors="none", edgecolors=COLORS["rejected"])
            if r["selected"]:
                ax.scatter([x], [y], s=260, marker="*", color=COLORS["selected"], zorder=4, label="best")
            else:
                ax.scatter([x], [y], s=70, lw=1.5, zorder=3, label="meets cost bounds" if r["fits"] else "rejected",
                           **style)
            ax.annotate(r["id"], (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
        ax.axhline(c["max_memory_mb"], color="k", ls="--", lw=0.8, alpha=0.6)
        ax.annotate(f"memory bound {c['max_memory_mb']:,.0f} MiB", (0.99, c["max_memory_mb"]),
                    xycoords=("axes fraction", "data"), fontsize=7, va="bottom", ha="right", alpha=0.7)
        ax.margins(x=0.18, y=0.12)
        ax.set_xlabel(label)
        ax.set_ylabel(f"memory on {result['profile']}, MiB")
        ax.grid(True, alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=8, loc="lower right")
        ax.set_title(f"memory vs {'latency' if key == 'step_ms' else 'energy'} (estimated)", fontsize=10)
    fig.suptitle(f"ablation of {result['model']} on {result['profile']}: cost only -- quality is not measurable "
                 "for a shape (no weights)", fontsize=11)
    return _png(fig)
