"""Bar charts as SVG images, drawn on the server for the run report (`jobs.run_report`).

The report embeds each chart as an `<img>` with a `data:` URL: a page that runs no script and
loads nothing from anywhere still shows its plots, and any browser or mail client draws them.
Every text that reaches an SVG is escaped here.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 640
FONT = 'font-family="system-ui, sans-serif" font-size="12"'
BLUE = "#3465a4"
GREY = "#a0a0a0"
ORANGE = "#f57900"


@dataclass(frozen=True)
class Series:
    """One set of bars: a name for the legend, a colour and a value per category."""

    name: str
    colour: str
    values: Sequence[float]


def data_url(svg: str) -> str:
    """An SVG document as a `data:` URL for an `<img src>`."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode("ascii")


def horizontal_bars(
    labels: Sequence[str], values: Sequence[float], colour: str = BLUE, unit: str = ""
) -> str:
    """One bar per label, left to right from zero, each with its value written beside it."""
    row, left, right = 24, 170, 110
    height = row * max(len(labels), 1) + 12
    top = max(values, default=0.0) or 1.0
    span = WIDTH - left - right
    parts = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 6 + i * row
        length = max(span * value / top, 0.0)
        parts.append(
            f'<text x="{left - 8}" y="{y + 16}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{left}" y="{y + 4}" width="{length:.1f}" height="{row - 8}" '
            f'fill="{colour}"/>'
            f'<text x="{left + length + 6:.1f}" y="{y + 16}">{escape(_figure(value) + unit)}</text>'
        )
    return _svg(WIDTH, height, "".join(parts))


def grouped_bars(categories: Sequence[str], series: Sequence[Series], y_label: str) -> str:
    """Vertical bars, one group per category and one bar per series in it, with a y axis from
    zero and a legend; category labels are written under their group, slanted when long."""
    left, right, top = 56, 12, 28
    plot_w, plot_h = WIDTH - left - right, 228
    group = plot_w / max(len(categories), 1)
    # Labels wider than their group (about 7 px a character) are slanted, with room below.
    slant = max((len(c) for c in categories), default=0) * 7 > group
    height = top + plot_h + (84 if slant else 40)
    highest = max((v for s in series for v in s.values), default=0.0)
    ceiling = _nice_ceiling(highest)
    bar = group * 0.8 / max(len(series), 1)
    parts = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#333"/>',
        f'<text x="12" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {top + plot_h / 2:.1f})">{escape(y_label)}</text>',
    ]
    for tick in range(5):
        value = ceiling * tick / 4
        y = top + plot_h - plot_h * tick / 4
        parts.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{escape(_figure(value))}'
            f'</text><line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
            'stroke="#ddd"/>'
        )
    for j, s in enumerate(series):
        for i, value in enumerate(s.values):
            h = plot_h * max(value, 0.0) / ceiling
            x = left + i * group + group * 0.1 + j * bar
            parts.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{s.colour}"/>'
            )
        parts.append(
            f'<rect x="{left + 10 + j * 160}" y="8" width="12" height="12" fill="{s.colour}"/>'
            f'<text x="{left + 28 + j * 160}" y="18">{escape(s.name)}</text>'
        )
    for i, category in enumerate(categories):
        x = left + (i + 0.5) * group
        y = top + plot_h + 16
        turn = f' transform="rotate(-40 {x:.1f} {y})"' if slant else ""
        anchor = "end" if slant else "middle"
        parts.append(
            f'<text x="{x:.1f}" y="{y}" text-anchor="{anchor}"{turn}>{escape(category)}</text>'
        )
    return _svg(WIDTH, height, "".join(parts))


def _svg(width: int, height: int, body: str) -> str:
    # width and height make the image's natural size; the viewBox lets CSS scale it.
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {FONT}><rect width="100%" height="100%" '
        f'fill="#fff"/>{body}</svg>'
    )


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten at or above `value` (1 for none)."""
    if not value > 0 or not math.isfinite(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= value)


def _figure(value: float) -> str:
    """A figure for a chart: whole numbers with separators, others to three significant."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.3g}"
