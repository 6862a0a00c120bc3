"""Checks of saved matplotlib figures shared by the figure tests: no text drawn outside the figure (a clipped title)."""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]


def _outside(box, bounds) -> bool:
    return box.x0 < bounds.x0 - 1 or box.y0 < bounds.y0 - 1 or box.x1 > bounds.x1 + 1 or box.y1 > bounds.y1 + 1


def clipped_texts(fig) -> list[str]:
    """What of `fig` (drawn again here, its layout run) reaches outside the figure by more than a pixel: each such
    text (titles, labels, legends, annotations), and "tick labels" where the tight bbox of everything drawn does
    (tick labels outside the axes' view are Text objects that are never drawn, so they are judged that way)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ticks = {id(label) for ax in fig.axes for axis in ax._axis_map.values()
             for tick in axis.get_major_ticks() + axis.get_minor_ticks() for label in (tick.label1, tick.label2)}
    out = [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text() and id(t) not in ticks
           and _outside(t.get_window_extent(renderer), fig.bbox)]
    if not out and _outside(fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans), fig.bbox):
        out.append("tick labels")
    return out
