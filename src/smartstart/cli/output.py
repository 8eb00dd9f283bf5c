"""Where a command's output goes: Rich on a terminal, plain text into pipes and files.

Rich costs a command ~30 ms to import and more to lay out a table, which matters when a
listing must start in 300 ms (issue 8). Into a pipe or a file nothing is styled, wrapped or
cut, so the text Rich would write can be written directly: `Stream` makes its Rich console
only when something needs one (a terminal, a renderable, markup), and `plain_table` writes a
table exactly as Rich draws it into a pipe (tests/cli/test_output.py compares the two).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

# Characters Rich would not write as they are: control codes (tabs are expanded, \r and
# others dropped, \n splits a cell into lines).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Rich's environment switches that make a pipe count as a terminal (or the reverse).
_TERMINAL_SWITCHES = ("FORCE_COLOR", "TTY_COMPATIBLE", "JUPYTER_COLUMNS", "JUPYTER_LINES")


class Stream:
    """stdout or stderr as a Rich console, made on first use (so never for plain output).

    Attributes and methods not defined here are the Rich console's; setting one (tests set
    `width`) sets it there.
    """

    _stderr: bool
    _rich: Console | None

    def __init__(self, *, stderr: bool = False) -> None:
        object.__setattr__(self, "_stderr", stderr)
        object.__setattr__(self, "_rich", None)

    @property
    def rich(self) -> Console:
        """The Rich console for this stream."""
        made = self._rich
        if made is None:
            from rich.console import Console

            made = Console(stderr=self._stderr)
            object.__setattr__(self, "_rich", made)
        return made

    @property
    def file(self) -> IO[str]:
        """The stream itself, looked up when used (test runners replace sys.stdout)."""
        if self._rich is not None:
            return self._rich.file
        return sys.stderr if self._stderr else sys.stdout

    @property
    def is_terminal(self) -> bool:
        """Whether Rich would treat the stream as a terminal (styles, fitting to its width)."""
        if self._rich is None and plain_file(self) is not None:
            return False
        return bool(self.rich.is_terminal)

    @property
    def width(self) -> int:
        """Rich's width (a property here, so that setting it and undoing that both reach Rich)."""
        return int(self.rich.width)

    @width.setter
    def width(self, value: int) -> None:
        self.rich.width = value

    def print(self, *objects: Any, **options: Any) -> None:
        """Rich's print (markup, styles, wrapping at the width)."""
        self.rich.print(*objects, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rich, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.rich, name, value)


def plain_file(target: Stream | Console) -> IO[str] | None:
    """The file to write plain text to, or None where Rich must write (a terminal, or
    anything that is not a plain UTF-8 stream)."""
    if isinstance(target, Stream):
        if target._rich is not None:  # made already (or replaced by a test): ask Rich
            return plain_file(target._rich)
        if any(name in os.environ for name in _TERMINAL_SWITCHES):
            return None
        file = target.file
    else:
        if target.is_terminal or target.color_system is not None or target.legacy_windows:
            return None
        file = target.file
    try:
        if file.isatty():
            return None
    except (AttributeError, ValueError):
        return None
    encoding = (getattr(file, "encoding", None) or "utf-8").lower()  # Rich's default
    return file if encoding.startswith("utf") else None


def terminal_file(target: Stream | Console) -> IO[str] | None:
    """The terminal to write a table or a line to without Rich, or None where Rich must
    (not a terminal, Rich made already, a dumb terminal, Rich's switches, not UTF-8)."""
    if not isinstance(target, Stream) or target._rich is not None:
        return None
    if any(name in os.environ for name in _TERMINAL_SWITCHES):
        return None
    if os.environ.get("TERM", "") in ("dumb", "unknown"):
        return None
    file = target.file
    try:
        if not file.isatty():
            return None
    except (AttributeError, ValueError):
        return None
    encoding = (getattr(file, "encoding", None) or "utf-8").lower()
    return file if encoding.startswith("utf") else None


def screen_width() -> int:
    """The terminal's width as Rich finds it (COLUMNS first, then stdin, stdout, stderr)."""
    width = 0
    for fd in (0, 1, 2):
        try:
            width = os.get_terminal_size(fd).columns
        except (OSError, ValueError):
            continue
        break
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() else (width or 80)


def _cells(text: str) -> int | None:
    """Terminal cells text takes (Rich's count), or None when Rich would change the text."""
    if text.isascii():
        return None if _CONTROL.search(text) else len(text)
    if _CONTROL.search(text):
        return None
    from rich.cells import cell_len

    return cell_len(text)


def say(target: Stream | Console, *parts: str | tuple[str, str]) -> None:
    """One line of text, never read as markup; (text, style) parts are styled on a terminal."""
    texts = [p if isinstance(p, str) else p[0] for p in parts]
    file = plain_file(target)
    if file is None and all(isinstance(p, str) for p in parts):
        file = terminal_file(target)  # unstyled: Rich would write the text as it is
    if file is not None and all(_cells(t) is not None for t in texts):
        file.write("".join(texts) + "\n")
        file.flush()
        return
    console = target.rich if isinstance(target, Stream) else target
    console.print(_text(*parts), soft_wrap=True, highlight=False)


def _text(*parts: str | tuple[str, str]) -> Text:
    from rich.text import Text

    return Text.assemble(*parts)


def plain_table(
    cells: Sequence[Sequence[str]], columns: Sequence[str], title: str | None, widths: list[int]
) -> str | None:
    """The table as Rich draws it into a pipe (heavy-headed box, one space of padding, every
    value whole), or None when that needs Rich (control characters, a title wider than
    the table). widths: each column's minimum."""
    if not columns:
        return None
    sizes = [_cells(c) for c in columns]
    rows = [[_cells(v) for v in row] for row in cells]
    if any(s is None for s in sizes) or any(s is None for row in rows for s in row):
        return None
    for i in range(len(columns)):
        widths[i] = max([widths[i], sizes[i] or 0, *((row[i] or 0) for row in rows)])
    inner = sum(widths) + 3 * len(widths) - 1  # one space each side, a rule between
    lines = []
    if title is not None:
        wide = _cells(title.strip())
        if wide is None or wide > inner + 2:
            return None
        left = (inner + 2 - wide) // 2
        lines.append(" " * left + title.strip() + " " * (inner + 2 - wide - left))

    def line(values: Sequence[str], counts: Sequence[int | None], edges: str) -> str:
        padded = [
            " " + v + " " * (w - (n or 0) + 1)
            for v, n, w in zip(values, counts, widths, strict=True)
        ]
        return edges[0] + edges[1].join(padded) + edges[2]

    def rule(edges: str) -> str:
        return edges[0] + edges[1].join(edges[2] * (w + 2) for w in widths) + edges[3]

    lines.append(rule("┏┳━┓"))
    lines.append(line(columns, sizes, "┃┃┃"))
    lines.append(rule("┡╇━┩"))
    lines.extend(line(values, counts, "│││") for values, counts in zip(cells, rows, strict=True))
    lines.append(rule("└┴─┘"))
    return "\n".join(lines) + "\n"
