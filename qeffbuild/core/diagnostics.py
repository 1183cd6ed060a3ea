"""Where a key sits in a TOML file: line numbers for error messages.

``tomllib`` keeps no positions, so this lexes the text itself: table headers, dotted and
quoted keys, inline tables and arrays (with element indices), every kind of string (a
``#`` or a ``[table]`` inside a string is text, not a comment or a header). It never
recurses deeper than :data:`MAX_DEPTH`, so a hostile file cannot exhaust the stack; what
it cannot place falls back to the enclosing key's or table's line.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

Path = tuple[str | int, ...]
MAX_DEPTH = 64
_PUNCT = set("[]{},=.")
_ATOM = re.compile(r"[^\s#\[\]{},=.\"']+")


@dataclass(frozen=True)
class Token:
    kind: str  # "nl" | "str" | "atom" | one of _PUNCT
    text: str
    line: int


@dataclass
class Lexed:
    tokens: list[Token]
    unterminated: int | None = None  # line of a string that never closed
    open_brackets: list[int] | None = None  # lines of brackets still open at the end


def _string_end(text: str, i: int, quote: str) -> tuple[int, bool]:
    """End index (exclusive) of the string opening at ``i``; False when it never closes."""
    n = len(text)
    if text.startswith(quote * 3, i):
        j = i + 3
        while j < n:
            if quote == '"' and text[j] == "\\":
                j += 2
                continue
            if text.startswith(quote * 3, j):
                end = j + 3
                while end < n and text[end] == quote and end - j < 5:  # up to two quotes of content
                    end += 1
                return end, True
            j += 1
        return n, False
    j = i + 1
    while j < n and text[j] != "\n":
        if quote == '"' and text[j] == "\\":
            j += 2
            continue
        if text[j] == quote:
            return j + 1, True
        j += 1
    return j, False


def lex(text: str) -> Lexed:
    tokens: list[Token] = []
    out = Lexed(tokens, None, [])
    line, i, n = 1, 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            tokens.append(Token("nl", "", line))
            line, i = line + 1, i + 1
        elif c in " \t\r":
            i += 1
        elif c == "#":
            nl = text.find("\n", i)
            i = n if nl < 0 else nl
        elif c in "\"'":
            end, closed = _string_end(text, i, c)
            raw = text[i:end]
            if not closed and out.unterminated is None:
                out.unterminated = line
            tokens.append(Token("str", _unquote(raw), line))
            line += raw.count("\n")
            i = end
        elif c in _PUNCT:
            tokens.append(Token(c, c, line))
            i += 1
        else:
            m = _ATOM.match(text, i)
            end = m.end() if m else i + 1
            tokens.append(Token("atom", text[i:end], line))
            i = end
    return out


def _unquote(raw: str) -> str:
    for q in ('"""', "'''", '"', "'"):
        if raw.startswith(q):
            body = raw[len(q):]
            return body[: -len(q)] if body.endswith(q) else body
    return raw


class _Indexer:
    def __init__(self, tokens: list[Token]) -> None:
        self.t = tokens
        self.i = 0
        self.where: dict[Path, int] = {}

    def peek(self) -> Token | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self) -> Token | None:
        tok = self.peek()
        self.i += 1
        return tok

    def skip_line(self) -> None:
        while (tok := self.peek()) is not None and tok.kind != "nl":
            self.i += 1

    def mark(self, path: Path, line: int) -> None:
        self.where.setdefault(path, line)

    def key(self) -> tuple[str, ...] | None:
        """A dotted key (bare or quoted parts) up to, not including, ``=`` or ``]``."""
        parts: list[str] = []
        while (tok := self.peek()) is not None and tok.kind in ("atom", "str"):
            parts.append(tok.text)
            self.i += 1
            if (nxt := self.peek()) is not None and nxt.kind == ".":
                self.i += 1
                continue
            break
        return tuple(parts) or None

    def run(self) -> dict[Path, int]:
        table: Path = ()
        arrays: dict[Path, int] = {}
        while (tok := self.peek()) is not None:
            if tok.kind == "nl":
                self.i += 1
            elif tok.kind == "[":
                table = self.header(tok, arrays)
            else:
                parts = self.key()
                eq = self.peek()
                if parts is None or eq is None or eq.kind != "=":
                    self.skip_line()
                    continue
                self.i += 1
                path = table + parts
                for k in range(1, len(parts) + 1):
                    self.mark(table + parts[:k], tok.line)
                self.value(path, 0)
                self.skip_line()
        return self.where

    def header(self, tok: Token, arrays: dict[Path, int]) -> Path:
        self.i += 1
        is_array = (nxt := self.peek()) is not None and nxt.kind == "["
        if is_array:
            self.i += 1
        parts = self.key() or ()
        self.skip_line()
        path: Path = parts
        if is_array:
            arrays[parts] = arrays.get(parts, -1) + 1
            path = (*parts, arrays[parts])
        for k in range(1, len(path) + 1):
            self.mark(path[:k], tok.line)
        return path

    def value(self, path: Path, depth: int) -> None:
        tok = self.peek()
        if tok is None:
            return
        if tok.kind in "[{" and depth >= MAX_DEPTH:
            self.skip_balanced()
        elif tok.kind == "{":
            self.i += 1
            self.inline_table(path, depth)
        elif tok.kind == "[":
            self.i += 1
            self.array(path, depth)
        else:  # a scalar: one string, or atoms joined by dots (1.5, dates, +inf)
            self.i += 1
            while (nxt := self.peek()) is not None and nxt.kind in (".", "atom"):
                self.i += 1

    def inline_table(self, path: Path, depth: int) -> None:
        while (tok := self.peek()) is not None:
            if tok.kind == "}":
                self.i += 1
                return
            if tok.kind in (",", "nl"):
                self.i += 1
                continue
            parts = self.key()
            if parts is None or (eq := self.peek()) is None or eq.kind != "=":
                self.i += 1
                continue
            self.i += 1
            for k in range(1, len(parts) + 1):
                self.mark((*path, *parts[:k]), tok.line)
            self.value((*path, *parts), depth + 1)

    def array(self, path: Path, depth: int) -> None:
        index = 0
        while (tok := self.peek()) is not None:
            if tok.kind == "]":
                self.i += 1
                return
            if tok.kind == "nl":
                self.i += 1
                continue
            if tok.kind == ",":
                self.i += 1
                index += 1
                continue
            self.mark((*path, index), tok.line)
            before = self.i
            self.value((*path, index), depth + 1)
            if self.i == before:
                self.i += 1

    def skip_balanced(self) -> None:
        depth = 0
        while (tok := self.take()) is not None:
            if tok.kind in "[{":
                depth += 1
            elif tok.kind in "]}":
                depth -= 1
                if depth == 0:
                    return


def index_lines(text: str) -> dict[Path, int]:
    """Map every key path seen in ``text`` (array elements by index) to its 1-based line."""
    return _Indexer(lex(text).tokens).run()


def line_of(index: dict[Path, int], path: Path) -> int | None:
    """The line of ``path``, or of its closest enclosing key or table."""
    for n in range(len(path), 0, -1):
        if path[:n] in index:
            return index[path[:n]]
        # A table known only through its sub-tables ([a.b] without [a]): its first sub-table.
        below = [line for key, line in index.items() if key[:n] == path[:n]]
        if below:
            return min(below)
    return None


def syntax_error_line(text: str, message: str) -> int | None:
    """A line for a TOML syntax error: tomllib's own, else where the unclosed construct opened."""
    m = re.search(r"\(at line (\d+), column \d+\)", message)
    if m:
        return int(m.group(1))
    lexed = lex(text)
    if lexed.unterminated is not None:
        return lexed.unterminated
    stack: list[int] = []
    for tok in lexed.tokens:
        if tok.kind in "[{":
            stack.append(tok.line)
        elif tok.kind in "]}" and stack:
            stack.pop()
    if stack:
        return stack[-1]
    return text.count("\n") + 1 if text else 1


# --- "did you mean" ----------------------------------------------------------------------------------

MANY = 200  # above this many known names, compare only with those that share a rare trigram


def closest(name: str, known: Sequence[str]) -> str | None:
    """The known name nearest to ``name`` (difflib's ratio ≥ 0.6), or None.

    difflib compares with every candidate in Python: fine for a key of a table, but 10,000 unknown deps
    among 10,000 targets is 10⁸ comparisons (90 s). Large name lists go through a trigram index first.
    """
    from difflib import get_close_matches

    candidates = _near(name, tuple(known)) if len(known) > MANY else list(known)
    close = get_close_matches(name, candidates, n=1)
    return close[0] if close else None


def did_you_mean(name: str, known: Sequence[str]) -> str:
    close = closest(name, known)
    return f"; did you mean {close!r}?" if close else ""


def _grams(word: str) -> set[str]:
    padded = f"  {word.lower()} "
    return {padded[i:i + 3] for i in range(len(padded) - 2)}


@functools.lru_cache(maxsize=4)
def _index(known: tuple[str, ...]) -> dict[str, list[str]]:
    """Trigram → names holding it, without trigrams most names share (a common prefix says nothing)."""
    index: dict[str, list[str]] = {}
    for k in known:
        for g in _grams(k):
            index.setdefault(g, []).append(k)
    limit = max(MANY, len(known) // 20)
    return {g: names for g, names in index.items() if len(names) <= limit}


def _near(name: str, known: tuple[str, ...], keep: int = 12) -> list[str]:
    from collections import Counter

    index = _index(known)
    counts = Counter(k for g in _grams(name) for k in index.get(g, ()))
    return [k for k, _ in counts.most_common(keep)]
