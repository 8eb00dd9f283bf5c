"""Charts as server-rendered SVG: no script, no inline style (colours come from app.css
through classes), text escaped, a title and description for screen readers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 640, 220
PAD_LEFT, PAD_BOTTOM, PAD_TOP = 48, 28, 12


@dataclass(frozen=True)
class Bar:
    label: str
    value: float


def _nice_max(value: float) -> float:
    """A round axis maximum at or above value."""
    if value <= 0:
        return 1.0
    step = 10 ** (len(str(int(value))) - 1)
    return float(((int(value) // step) + 1) * step)


def bars(points: Sequence[Bar], *, title: str, unit: str = "", key: str = "c") -> Markup | None:
    """A bar chart of the points in order; None when there is nothing to draw.

    key: makes the title's and description's ids unique when a page has several charts."""
    if not points:
        return None
    top = _nice_max(max(p.value for p in points))
    inner_w = WIDTH - PAD_LEFT
    inner_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    slot = inner_w / len(points)
    gap = min(slot * 0.2, 8.0)
    every = max(1, len(points) // 8)  # at most ~8 labels under the axis
    parts = [
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{key}-t {key}-d"'
        ' xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{key}-t">{escape(title)}</title>',
        f'<desc id="{key}-d">'
        + escape(", ".join(f"{p.label}: {p.value:g}{unit}" for p in points[:200]))
        + "</desc>",
        f'<line class="axis" x1="{PAD_LEFT}" y1="{HEIGHT - PAD_BOTTOM}"'
        f' x2="{WIDTH}" y2="{HEIGHT - PAD_BOTTOM}"/>',
        f'<text x="{PAD_LEFT - 6}" y="{PAD_TOP + 10}" text-anchor="end">{top:g}</text>',
        f'<text x="{PAD_LEFT - 6}" y="{HEIGHT - PAD_BOTTOM}" text-anchor="end">0</text>',
    ]
    for i, p in enumerate(points):
        h = inner_h * (max(p.value, 0) / top)
        x = PAD_LEFT + i * slot + gap / 2
        y = HEIGHT - PAD_BOTTOM - h
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{slot - gap:.1f}"'
            f' height="{h:.1f}"><title>{escape(p.label)}: {p.value:g}{escape(unit)}</title></rect>'
        )
        if i % every == 0:
            parts.append(
                f'<text x="{x + (slot - gap) / 2:.1f}" y="{HEIGHT - 8}"'
                f' text-anchor="middle">{escape(p.label[:12])}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every piece of text above is escaped
