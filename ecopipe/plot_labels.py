"""Point labels that neither overlap one another nor run off their axes, for every plot that names
its points (the aggregation's energy-quality plot, a selection job's Pareto figure)."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.backend_bases import RendererBase
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Annotation, Text
from matplotlib.transforms import Bbox

# Offsets in points tried in turn: beside the marker, then above and below it, further each time.
_OFFSETS = [(6, 3), (6, -11), (6, 12), (6, -20), (6, 21), (6, -29), (6, 30), (6, -38)]
_MARKER_PX = 3.5  # half a marker's size, in points
_LEADER = {"arrowstyle": "-", "lw": 0.5, "color": "0.5", "shrinkA": 0, "shrinkB": 3}


def text_box(label: Text, renderer: RendererBase) -> Bbox:
    """A label's text alone, in display units (an annotation's own extent takes in its leader line)."""
    if isinstance(label, Annotation):
        label.update_positions(renderer)  # where its offset puts it, as a draw would
    return Text.get_window_extent(label, renderer)


def place_labels(ax: Axes, points: Sequence[tuple[float, float, str]], fontsize: float = 6.5) -> None:
    """Name each (x, y) point at the first offset whose box overlaps no label placed before, stays
    inside the axes and, where it can, off every marker; a label is written leftwards from a point in
    the right half of the axes. Call it once the axes' limits, scales and layout are set: the boxes
    are measured on the figure as drawn (a label keeps out of the layout, which would otherwise move
    the axes under it)."""
    figure = ax.figure
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    figure.draw_without_rendering()  # a constrained layout places the axes on a draw...
    figure.set_layout_engine("none")  # ...and must not move them again under the placed labels
    renderer = canvas.get_renderer()
    to_axes = ax.transData + ax.transAxes.inverted()
    # The markers are obstacles too (a label on another point's marker names the wrong point), but
    # softer ones: where no place is free of both, a place free of other labels is taken.
    half = _MARKER_PX * figure.dpi / 72
    markers = [
        Bbox.from_extents(px - half, py - half, px + half, py + half)
        for px, py in ax.transData.transform([(x, y) for x, y, _ in points])
    ]
    placed: list[Bbox] = []
    inside = ax.get_window_extent(renderer)
    for x, y, text in sorted(points, key=lambda p: (-p[1], p[0])):
        right = to_axes.transform((x, y))[0] > 0.5
        style = {"textcoords": "offset points", "fontsize": fontsize, "ha": "right" if right else "left",
                 "va": "bottom"}  # fmt: skip
        costs = []
        for i, (dx, dy) in enumerate(_OFFSETS):
            trial = ax.annotate(text, (x, y), xytext=(-dx if right else dx, dy), **style)
            box = text_box(trial, renderer)
            trial.remove()
            within = (
                inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
            )
            outside = int(not within)
            clashes = sum(box.overlaps(o) for o in placed) + outside  # on another label, or off the axes
            costs.append((clashes, sum(box.overlaps(m) for m in markers), i))
        best = min(costs)[2]
        dx, dy = _OFFSETS[best]
        # Beyond the first two places, a thin line leads from the label to its point.
        arrow = {"arrowprops": _LEADER} if best >= 2 else {}
        label = ax.annotate(text, (x, y), xytext=(-dx if right else dx, dy), **style, **arrow)
        label.set_in_layout(False)
        placed.append(text_box(label, renderer))
