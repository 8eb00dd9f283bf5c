"""Read the Database Operations Guide: its sections, code blocks and SQL statements.

A small, dependency-free parser for Markdown documents such as
`database-operations-guide.md` and `docs/guide-sql.md`. It keeps each fenced
code block's heading path (so a statement can be attributed to, say, "Journey
Management") and splits SQL blocks into the statements psql would send, as psql
itself would split them:

- a statement ends at a `;` outside comments, string literals, quoted
  identifiers and dollar-quoted bodies (`-- Log queries > 1 second; really` does
  not end one, nor does `'a;b'`);
- a psql meta-command (`\\dt`, `\\d "User"`, `\\l`, `\\du`, `\\q`) starts with a
  backslash where no SQL is pending and runs to the end of its line;
- the comment lines just above a statement are its description, and a comment
  after the `;` on the same line belongs to the statement it follows.

Statement text is kept verbatim (byte for byte as written in the document, from
its first token to its `;`), so tests and tools can run exactly what the guide
says.

Used by tests/test_guide_acceptance.py and meant for docs tooling::

    from guide import load_guide
    for st in load_guide().statements(sections={"User Management"}):
        print(st.section, st.line, st.description, st.sql)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
GUIDE_ENV = "SMARTSTART_GUIDE"
# A copy of the user's specification (shared/seed/ beside the repository) lives in the
# repository, so that the acceptance tests run on any clone, CI's included.
DEFAULT_GUIDE = REPO_ROOT / "docs" / "spec" / "database-operations-guide.md"

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^`\s]*)[^`]*$")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\x80-\uffff][A-Za-z_0-9\x80-\uffff]*)?\$")


def guide_path() -> Path:
    """Where the guide is: `$SMARTSTART_GUIDE`, else the copy in docs/spec/."""
    override = os.environ.get(GUIDE_ENV)
    path = Path(override).expanduser() if override else DEFAULT_GUIDE
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path.resolve()


def clean_heading(text: str) -> str:
    """`**3. Basic SQL Operations**` -> `Basic SQL Operations`; emoji and numbering removed."""
    text = re.sub(r"[*_`]", "", text).strip()
    text = re.sub(r"^[^\w(]+", "", text)  # leading emoji / symbols
    text = re.sub(r"^\d+(\.\d+)*\.?\s+", "", text)  # "3. " numbering
    return text.strip()


@dataclass(frozen=True)
class Statement:
    """One statement of a code block, as psql would send it."""

    sql: str  # verbatim, from the first token through the terminating `;`
    kind: str  # "sql" or "meta" (a psql backslash command)
    section: str  # nearest heading, cleaned ("Journey Management")
    headings: tuple[str, ...]  # all enclosing headings, outermost first
    line: int  # 1-based line in the document where the statement starts
    index: int  # position in the list it was returned in (0-based)
    description: str = ""  # the comment lines just above it, without `--`
    trailing_comment: str = ""  # a comment after the `;` on the same line
    terminated: bool = True  # False for SQL left without `;` at the end of a block

    @property
    def first_line(self) -> str:
        return self.sql.strip().splitlines()[0] if self.sql.strip() else ""

    def label(self) -> str:
        """A short name for messages: section, line and description (or first line)."""
        what = self.description or self.first_line
        return f"[{self.section} line {self.line}] {what}"


@dataclass(frozen=True)
class CodeBlock:
    """A fenced code block and where it sits."""

    language: str
    text: str
    section: str
    headings: tuple[str, ...]
    line: int  # 1-based line of the first line of content (after the fence)

    def statements(self, start_index: int = 0) -> list[Statement]:
        return split_statements(
            self.text,
            section=self.section,
            headings=self.headings,
            first_line=self.line,
            start_index=start_index,
        )


@dataclass
class Document:
    path: Path | None
    blocks: list[CodeBlock] = field(default_factory=list)

    def sections(self) -> list[str]:
        return list(dict.fromkeys(b.section for b in self.blocks))

    def code_blocks(self, language: str | None = None) -> list[CodeBlock]:
        return [b for b in self.blocks if language is None or b.language == language]

    def statements(
        self, sections: Iterable[str] | None = None, language: str = "sql"
    ) -> list[Statement]:
        """SQL statements in document order, optionally only those of the named sections."""
        wanted = set(sections) if sections is not None else None
        out: list[Statement] = []
        for block in self.code_blocks(language):
            if wanted is not None and block.section not in wanted:
                continue
            out.extend(block.statements(start_index=len(out)))
        return out


def parse_markdown(text: str, path: Path | None = None) -> Document:
    """Fenced code blocks of a Markdown document, each with its heading path."""
    doc = Document(path)
    stack: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            indent, marker, lang = fence.groups()
            body: list[str] = []
            j = i + 1
            closing = re.compile(rf"^\s*{re.escape(marker[0])}{{{len(marker)},}}\s*$")
            while j < len(lines) and not closing.match(lines[j]):
                body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
                j += 1
            headings = tuple(h for _, h in stack)
            doc.blocks.append(
                CodeBlock(
                    language=lang.lower(),
                    text="\n".join(body) + ("\n" if body else ""),
                    section=headings[-1] if headings else "",
                    headings=headings,
                    line=i + 2,
                )
            )
            i = j + 1
            continue
        heading = _HEADING.match(line)
        if heading:
            level = len(heading.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, clean_heading(heading.group(2))))
        i += 1
    return doc


def load_guide(path: Path | None = None) -> Document:
    path = path or guide_path()
    return parse_markdown(path.read_text(encoding="utf-8"), path)


def _skip_quoted(text: str, i: int, quote: str, backslash_escapes: bool = False) -> int:
    """Index just past the literal/identifier opened at text[i]; doubled quotes escape."""
    j = i + 1
    n = len(text)
    while j < n:
        c = text[j]
        if backslash_escapes and c == "\\":
            j += 2
            continue
        if c == quote:
            if j + 1 < n and text[j + 1] == quote:
                j += 2
                continue
            return j + 1
        j += 1
    return n


def _skip_block_comment(text: str, i: int) -> int:
    """Index just past the (possibly nested) /* ... */ comment at text[i]."""
    depth = 0
    j = i
    n = len(text)
    while j < n:
        if text.startswith("/*", j):
            depth += 1
            j += 2
        elif text.startswith("*/", j):
            depth -= 1
            j += 2
            if depth == 0:
                return j
        else:
            j += 1
    return n


def _tokens(text: str) -> Iterator[tuple[str, int, int]]:
    """(kind, start, end) for the lexically interesting parts of SQL text.

    kinds: "comment" (-- to end of line), "block" (/* */), "semi", "meta"
    (a backslash command to end of line), "ws" (whitespace), "other"
    (everything else: words, literals, identifiers, punctuation).
    """
    i = 0
    n = len(text)
    pending_sql = False  # is there SQL since the last terminator?
    while i < n:
        c = text[i]
        if c.isspace():
            j = i
            while j < n and text[j].isspace():
                j += 1
            yield "ws", i, j
            i = j
        elif text.startswith("--", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            yield "comment", i, j
            i = j
        elif text.startswith("/*", i):
            j = _skip_block_comment(text, i)
            yield "block", i, j
            i = j
        elif c == ";":
            yield "semi", i, i + 1
            pending_sql = False
            i += 1
        elif c == "\\" and not pending_sql:
            j = text.find("\n", i)
            j = n if j < 0 else j
            yield "meta", i, j
            i = j
        else:
            pending_sql = True
            if c in "'\"":
                prefix_e = c == "'" and i > 0 and text[i - 1] in "eE" and _word_start(text, i - 1)
                j = _skip_quoted(text, i, c, backslash_escapes=prefix_e)
            elif c == "$" and (m := _DOLLAR_TAG.match(text, i)) and not _in_word(text, i):
                close = text.find(m.group(0), m.end())
                j = n if close < 0 else close + len(m.group(0))
            elif c in "$-/\\":
                j = i + 1  # an operator character that starts no comment or quote
            else:
                j = i + 1
                while j < n and not (text[j].isspace() or text[j] in ";'\"$-/\\"):
                    j += 1
            yield "other", i, j
            i = j


def _word_start(text: str, i: int) -> bool:
    """True when text[i] starts a word (E'...' prefix, not the end of `name'`)."""
    return i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")


def _in_word(text: str, i: int) -> bool:
    """`$1`-style parameters and identifiers like a$b$ are not dollar quotes."""
    return i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")


def _comment_text(raw: str) -> str:
    if raw.startswith("--"):
        return raw[2:].strip()
    return raw[2:-2].strip() if raw.endswith("*/") else raw[2:].strip()


def split_statements(
    text: str,
    *,
    section: str = "",
    headings: tuple[str, ...] = (),
    first_line: int = 1,
    start_index: int = 0,
) -> list[Statement]:
    """Split a block of SQL (with psql meta-commands) into statements."""
    out: list[Statement] = []
    description: list[str] = []
    start: int | None = None  # offset where the pending statement starts
    last_end: int | None = None  # offset just past the last statement, for trailing comments

    def line_of(offset: int) -> int:
        return first_line + text.count("\n", 0, offset)

    def emit(kind: str, begin: int, end: int, terminated: bool = True) -> None:
        nonlocal description
        out.append(
            Statement(
                sql=text[begin:end],
                kind=kind,
                section=section,
                headings=headings,
                line=line_of(begin),
                index=start_index + len(out),
                description=" ".join(description),
                terminated=terminated,
            )
        )
        description = []

    for kind, s, e in _tokens(text):
        if kind == "ws":
            if "\n" in text[s:e]:
                last_end = None
            continue
        if kind in ("comment", "block"):
            if start is None:
                if last_end is not None and out:
                    # `...; -- note` : the note belongs to the statement just ended.
                    out[-1] = replace(out[-1], trailing_comment=_comment_text(text[s:e]))
                    last_end = None
                else:
                    description.append(_comment_text(text[s:e]))
            continue
        if kind == "meta":
            emit("meta", s, e)
            last_end = e
            continue
        if kind == "semi":
            if start is None:
                continue  # an empty statement
            emit("sql", start, e)
            start = None
            last_end = e
            continue
        if start is None:
            start = s
            last_end = None
    if start is not None:
        end = len(text.rstrip())
        emit("sql", start, end, terminated=False)
    return out
