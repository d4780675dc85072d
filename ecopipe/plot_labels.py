"""Point labels that neither overlap one another nor run off their axes, for every plot that names
its points (the aggregation's energy-quality plot, a selection job's Pareto figure)."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg

# Offsets in points tried in turn: beside the marker, then above and below it, further each time.
_OFFSETS = [(6, 3), (6, -11), (6, 12), (6, -20), (6, 21), (6, -29), (6, 30), (6, -38)]


def place_labels(ax: Axes, points: Sequence[tuple[float, float, str]], fontsize: float = 6.5) -> None:
    """Name each (x, y) point with the first offset whose box overlaps no label placed before; a
    label is written leftwards from a point in the right half of the axes. Call it once the axes'
    limits, scales and layout are set: the boxes are measured on the figure as drawn (a label keeps
    out of the layout, which would otherwise move the axes under it)."""
    figure = ax.figure
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    figure.draw_without_rendering()  # a constrained layout places the axes on a draw
    renderer = canvas.get_renderer()
    to_axes = ax.transData + ax.transAxes.inverted()
    placed = []
    for x, y, text in sorted(points, key=lambda p: (-p[1], p[0])):
        right = to_axes.transform((x, y))[0] > 0.5
        label = None
        for dx, dy in _OFFSETS:
            if label is not None:
                label.remove()
            label = ax.annotate(text, (x, y), xytext=(-dx if right else dx, dy), textcoords="offset points",
                                fontsize=fontsize, ha="right" if right else "left", va="bottom")  # fmt: skip
            label.set_in_layout(False)
            box = label.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
        placed.append(label.get_window_extent(renderer))
