"""A table on a terminal without Rich: Rich's layout (its column widths, folding and word
wrapping, ported for ASCII text), with a bold header and an italic title.

Importing Rich and laying out a 20-row table costs a listing ~60 ms; a person at a
terminal waits for it as a script does (issue 8: 300 ms). Anything this does not cover
(non-ASCII text, a title wider than the table, a table Rich would squeeze past its
columns' minimum) returns None and Rich draws it. tests/cli/test_output.py compares the
two.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORDS = re.compile(r"\s*\S+\s*")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_TRAILING = re.compile(r"\s+$")
BOLD, ITALIC, RESET = "\x1b[1m", "\x1b[3m", "\x1b[0m"


def table(
    cells: Sequence[Sequence[str]],
    columns: Sequence[str],
    title: str | None,
    minimum: Sequence[int],
    screen: int,
) -> str | None:
    """The table fitted to screen columns as Rich fits it (minimum: a whole column's
    width, 0 for one that may be folded), or None when Rich must draw it."""
    texts = [*columns, *(v for row in cells for v in row), title or ""]
    if not columns or not all(_PRINTABLE.fullmatch(t) for t in texts):
        return None
    n = len(columns)
    grid = [list(columns), *([*row] for row in cells)]
    natural = [max(minimum[i], *(len(r[i]) for r in grid)) + 2 for i in range(n)]
    foldable = [minimum[i] == 0 for i in range(n)]
    least = [
        natural[i] if not foldable[i] else max(_longest_word(r[i]) for r in grid) + 2
        for i in range(n)
    ]
    # print_table fits the table to the screen, or prints it at its minimum when wider.
    available = max(screen, sum(least) + n + 1) - (n + 1)
    widths = natural
    if sum(widths) > available:
        widths = _collapse(widths, foldable, available)
        if sum(widths) > available:
            return None  # Rich's last resort squeezes every column: leave it to Rich
        widths = [min(natural[i], widths[i]) for i in range(n)]
    if any(w < 3 for w in widths):
        return None
    if title is not None and (title != title.strip() or len(title) > sum(widths) + n + 1):
        return None  # Rich wraps it
    return _draw(grid, widths, foldable, title)


def _longest_word(text: str) -> int:
    return max((len(word) for word in text.split()), default=len(text))


def _draw(grid: list[list[str]], widths: list[int], foldable: list[bool], title: str | None) -> str:
    inner = sum(widths) + len(widths) - 1
    out = []
    if title is not None:
        left = (inner + 2 - len(title)) // 2
        out.append(" " * left + ITALIC + title + RESET + " " * (inner + 2 - len(title) - left))
    out.append("┏" + "┳".join("━" * w for w in widths) + "┓")
    out.extend(_row(grid[0], widths, foldable, "┃", BOLD))  # Rich aligns it to the bottom
    out.append("┡" + "╇".join("━" * w for w in widths) + "┩")
    for row in grid[1:]:
        out.extend(_row(row, widths, foldable, "│", ""))
    out.append("└" + "┴".join("─" * w for w in widths) + "┘")
    return "\n".join(out) + "\n"


def _row(
    values: list[str], widths: list[int], foldable: list[bool], edge: str, style: str
) -> list[str]:
    """The lines of one row: each cell wrapped in its column and padded (a body row's at
    the top, the header's at the bottom)."""
    wrapped = [
        _wrap(v, w - 2) if fold else [v]
        for v, w, fold in zip(values, widths, foldable, strict=True)
    ]
    height = max(len(lines) for lines in wrapped)
    if style:  # the header: each cell aligned to the bottom, as Rich does
        wrapped = [[""] * (height - len(cell)) + cell for cell in wrapped]
    lines = []
    for k in range(height):
        parts = []
        for cell, w in zip(wrapped, widths, strict=True):
            text = cell[k] if k < len(cell) else ""
            padded = " " + text + " " * (w - 1 - len(text))
            parts.append(style + padded + RESET if style else padded)
        lines.append(edge + edge.join(parts) + edge)
    return lines


def _wrap(text: str, width: int) -> list[str]:
    """text in lines of at most width, as Rich's Text.wrap with overflow="fold" makes them."""
    breaks = _divide(text, width)
    lines = [text[a:b] for a, b in zip([0, *breaks], [*breaks, len(text)], strict=True)]
    out = []
    for line in lines:
        if len(line) > width and (space := _TRAILING.search(line)):
            line = line[: len(line) - min(len(space.group()), len(line) - width)]
        out.append(line[:width])
    return out


def _divide(text: str, width: int) -> list[int]:
    """Where Rich breaks text into lines (rich._wrap.divide_line, folding long words)."""
    breaks: list[int] = []
    offset = 0
    for match in _WORDS.finditer(text):
        start, word = match.start(), match.group()
        length = len(word.rstrip())
        if width - offset >= length:
            offset += len(word)
        elif length > width:
            chunks = [word[i : i + width] for i in range(0, len(word), width)]
            for k, chunk in enumerate(chunks):
                if start:
                    breaks.append(start)
                if k == len(chunks) - 1:
                    offset = len(chunk)
                else:
                    start += len(chunk)
        elif offset and start:
            breaks.append(start)
            offset = len(word)
    return breaks


def _collapse(widths: list[int], wrapable: list[bool], max_width: int) -> list[int]:
    """Rich's Table._collapse_widths: narrow the widest foldable columns first."""
    total = sum(widths)
    excess = total - max_width
    if any(wrapable):
        while total and excess > 0:
            widest = max(w for w, a in zip(widths, wrapable, strict=True) if a)
            second = max(
                w if a and w != widest else 0 for w, a in zip(widths, wrapable, strict=True)
            )
            ratios = [1 if a and w == widest else 0 for w, a in zip(widths, wrapable, strict=True)]
            if not any(ratios) or not widest - second:
                break
            widths = _ratio_reduce(
                excess, ratios, [min(excess, widest - second)] * len(widths), widths
            )
            total = sum(widths)
            excess = total - max_width
    return widths


def _ratio_reduce(
    total: int, ratios: list[int], maximums: list[int], values: list[int]
) -> list[int]:
    """rich._ratio.ratio_reduce."""
    ratios = [r if m else 0 for r, m in zip(ratios, maximums, strict=True)]
    total_ratio = sum(ratios)
    if not total_ratio:
        return values[:]
    remaining = total
    result = []
    for ratio, maximum, value in zip(ratios, maximums, values, strict=True):
        if ratio and total_ratio > 0:
            distributed = min(maximum, round(ratio * remaining / total_ratio))
            result.append(value - distributed)
            remaining -= distributed
            total_ratio -= ratio
        else:
            result.append(value)
    return result
