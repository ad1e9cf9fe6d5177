"""Figures for the dataset card and reports, written as PNG files.

matplotlib with the non-interactive Agg backend: no display needed, the same
bytes on every machine for the same data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

FIGURE_DPI = 100


def save_histograms(
    series: Mapping[str, Sequence[float]], path: Path, *, xlabel: str, bins: int = 30
) -> Path:
    """One histogram per named series, side by side, in one PNG."""
    count = max(1, len(series))
    figure, axes = plt.subplots(1, count, figsize=(3.6 * count, 3.0), squeeze=False)
    for axis, (name, values) in zip(axes[0], series.items(), strict=False):
        finite = [value for value in values if value is not None and math.isfinite(value)]
        axis.hist(finite, bins=bins, color="#4C72B0")
        axis.set_title(name)
        axis.set_xlabel(xlabel)
        axis.set_ylabel("count")
    figure.tight_layout()
    return _save(figure, path)


def save_bar_chart(
    groups: Mapping[str, Mapping[str, float]],
    path: Path,
    *,
    ylabel: str,
    title: str = "",
    counts: bool = False,
) -> Path:
    """Grouped horizontal bars in one PNG (see `bar_chart`)."""
    return _save(bar_chart(groups, ylabel=ylabel, title=title, counts=counts), path)


def bar_chart(
    groups: Mapping[str, Mapping[str, float]], *, ylabel: str, title: str = "", counts: bool = False
) -> plt.Figure:
    """Grouped horizontal bars: one bar per (label, series) pair.

    `groups` maps a series name (e.g. "pairs") to values by label (e.g. category).
    `counts`: the values are counts, so the value axis has whole-number ticks. The
    legend (more than one series) sits below the axes, never over the bars.
    """
    labels = sorted({label for values in groups.values() for label in values})
    height = 0.8 / max(1, len(groups))
    legend_room = 0.4 if len(groups) > 1 else 0.0
    figure, axis = plt.subplots(
        figsize=(7.0, 0.35 * len(labels) + 1.2 + legend_room), layout="constrained"
    )
    for offset, (name, values) in enumerate(groups.items()):
        positions = [index + offset * height for index in range(len(labels))]
        axis.barh(positions, [values.get(label, 0) for label in labels], height=height, label=name)
    axis.set_yticks([index + height * (len(groups) - 1) / 2 for index in range(len(labels))])
    axis.set_yticklabels(labels)
    axis.invert_yaxis()
    axis.set_xlabel(ylabel)
    if counts:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        axis.set_title(title)
    if len(groups) > 1:
        figure.legend(loc="outside lower center", ncols=len(groups), frameon=False)
    return figure


def _save(figure: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=FIGURE_DPI, metadata={"Software": None})
    plt.close(figure)
    return path
