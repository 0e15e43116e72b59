"""The HTML report's figures: matplotlib (Agg, no pyplot) rendered to inline PNG data URIs.

Figures are built with `matplotlib.figure.Figure`, never pyplot, so making a
report changes no global backend or state in the caller's process. Each
function takes numbers already aggregated (by SQL in pipeline/report/html.py),
so a catalog of millions of clips never becomes a Python list here.
"""
from __future__ import annotations

import base64
import io
from typing import Sequence

from matplotlib.figure import Figure

STATUS_COLOURS = {"accepted": "#2e8b57", "ok": "#2e8b57", "rejected": "#d9534f", "error": "#7f7f7f"}
OTHER_COLOUR = "#5b7bd5"
DPI = 96


def png_uri(fig: Figure, tight: bool = False) -> str:
    """The figure as a `data:image/png;base64,…` URI.

    `tight` fits the margins to the labels, at the cost of a second layout pass.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight" if tight else None, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float = 3.9, height: float = 2.5):  # 3 across a 1280 px window
    fig = Figure(figsize=(width, height))
    ax = fig.add_subplot()
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8)
    return fig, ax


def histogram(title: str, xlabel: str, edges: Sequence[float], counts: dict[str, Sequence[int]],
              ylabel: str = "clips") -> str:
    """Bars over `edges` (len = bins + 1), stacked by status (accepted, rejected, error, others)."""
    fig, ax = _figure()
    fig.subplots_adjust(left=0.16, right=0.97, bottom=0.17, top=0.89)  # fixed margins: no second layout pass
    bottom = [0] * (len(edges) - 1)
    order = sorted(counts, key=lambda s: (list(STATUS_COLOURS).index(s) if s in STATUS_COLOURS else 9, s))
    for status in order:  # one filled step patch per status: far fewer artists than a rectangle per bin
        top = [b + v for b, v in zip(bottom, counts[status])]
        ax.stairs(top, edges, baseline=bottom, fill=True, label=f"{status} ({sum(counts[status]):,})",
                  color=STATUS_COLOURS.get(status, OTHER_COLOUR))
        bottom = top
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(0, max(bottom) * 1.08 or 1)
    if len(order) > 1:
        ax.legend(fontsize=7, frameon=False)
    return png_uri(fig)


def bars(title: str, labels: Sequence[str], values: Sequence[float], colours: Sequence[str] | str = OTHER_COLOUR,
         xlabel: str = "") -> str:
    """Horizontal bars, first label on top, each bar annotated with its value."""
    fig, ax = _figure(6.4, 0.5 + 0.32 * max(len(labels), 2))
    positions = list(range(len(labels)))[::-1]
    ax.barh(positions, values, color=colours, height=0.7)
    ax.set_yticks(positions, [_short(label) for label in labels], fontsize=8)
    top = max(values, default=0) or 1
    for y, value in zip(positions, values):
        ax.text(value + top * 0.01, y, f"{value:,g}", va="center", fontsize=8)
    ax.set_xlim(0, top * 1.15)
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_xlabel(xlabel, fontsize=8)
    return png_uri(fig, tight=True)


def timeline(title: str, runs: dict[str, tuple[Sequence[float], Sequence[int]]]) -> str:
    """Clips committed (cumulative) against seconds since each run started, one step line per run."""
    fig, ax = _figure(6.4, 2.8)
    for run_id, (seconds, clips) in runs.items():
        ax.step([0, *seconds], [0, *clips], where="post", marker="o", markersize=3, label=run_id)
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_xlabel("seconds since the run started", fontsize=8)
    ax.set_ylabel("clips committed", fontsize=8)
    if len(runs) > 1:
        ax.legend(fontsize=7, frameon=False)
    return png_uri(fig, tight=True)


def _short(text: str, width: int = 36) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
