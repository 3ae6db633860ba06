"""Where keys sit in a TOML text: a line scanner, so policy errors can name the line of a
value (`tomllib` reads the values; it does not say where they were), and the checks that
refuse documents too deep or numbers too long before the parser sees them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Optional

from memguard.policy.units import show_value

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_KEY_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\')'
_KEY = re.compile(rf"[ \t]*({_KEY_PART}(?:[ \t]*\.[ \t]*{_KEY_PART})*)[ \t]*")
_POSITION = re.compile(r"\s*\((?:at line (\d+), column \d+|at end of document)\)\s*$")

_KeyPath = tuple[str, ...]


def _dotted(path: Iterable[str]) -> str:
    """A key path as TOML writes it: `stores.diagram.max_age`, `stores."a.b".max_age`."""
    return ".".join(part if _BARE_KEY.fullmatch(part) else show_value(part) for part in path)


def _key_parts(text: str) -> _KeyPath:
    """The parts of a dotted TOML key such as `a."b.c".d`, unquoted."""
    parts: list[str] = []
    for raw in re.findall(_KEY_PART, text):
        if raw.startswith('"'):
            import json  # a quoted key in a policy file: rare, and ordinary use needs no json

            try:
                parts.append(str(json.loads(raw)))
            except ValueError:
                parts.append(raw[1:-1])
        elif raw.startswith("'"):
            parts.append(raw[1:-1])
        else:
            parts.append(raw)
    return tuple(parts)


class _KeyLines:
    """The line of every table header and key in a TOML text, found by scanning its lines.

    Good enough for error messages, never used to read values: tomllib does that.
    """

    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")
        self.first: dict[_KeyPath, int] = {}
        self.on_line: dict[int, _KeyPath] = {}
        self.duplicate: Optional[tuple[_KeyPath, int]] = None
        self._scan()

    def _record(self, path: _KeyPath, line: int, *, repeatable: bool = False) -> None:
        if path in self.first:
            if self.duplicate is None and not repeatable:
                self.duplicate = (path, line)
            return
        self.first[path] = line
        self.on_line.setdefault(line, path)

    def _scan(self) -> None:
        table: _KeyPath = ()
        closing: Optional[str] = None  # the delimiter of the multi-line string we are in
        for number, line in enumerate(self.lines, start=1):
            if closing is not None:
                if closing in line:
                    closing = None
                continue
            stripped = line.lstrip()
            if stripped.startswith("["):
                array = stripped.startswith("[[")
                match = _KEY.match(stripped, 2 if array else 1)
                if match:
                    table = _key_parts(match.group(1))
                    self._record(table, number, repeatable=array)
                continue
            match = _KEY.match(line)
            if not match or line[match.end() : match.end() + 1] != "=":
                continue
            path = table + _key_parts(match.group(1))
            self._record(path, number)
            value = line[match.end() + 1 :].lstrip()
            if value.startswith("{"):
                self._scan_inline(path, value, number)
            for delimiter in ('"""', "'''"):
                if value.count(delimiter) % 2 == 1:
                    closing = delimiter

    def _scan_inline(self, path: _KeyPath, text: str, number: int, depth: int = 0) -> int:
        """Record the keys of the inline table at the start of `text`; return its length."""
        if depth > MAX_NESTING:  # refused by the loader; do not recurse past it here
            return len(text)
        position = 1
        while position < len(text):
            char = text[position]
            if char in " \t,":
                position += 1
                continue
            if char == "}":
                return position + 1
            match = _KEY.match(text, position)
            if not match or text[match.end() : match.end() + 1] != "=":
                return len(text)
            key = path + _key_parts(match.group(1))
            self._record(key, number)
            position = match.end() + 1
            while position < len(text) and text[position] in " \t":
                position += 1
            if text[position : position + 1] == "{":
                position += self._scan_inline(key, text[position:], number, depth + 1)
            else:
                position = _skip_value(text, position)
        return len(text)

    def line_of(self, path: _KeyPath) -> Optional[int]:
        """The line of `path`; else of its first child; else of its nearest parent."""
        if path in self.first:
            return self.first[path]
        children = [line for key, line in self.first.items() if key[: len(path)] == path]
        if children:
            return min(children)
        for end in range(len(path) - 1, 0, -1):
            if path[:end] in self.first:
                return self.first[path[:end]]
        return None

    def key_at(self, line: int) -> Optional[_KeyPath]:
        return self.on_line.get(line)

    def text_at(self, line: int) -> str:
        return self.lines[line - 1] if 0 < line <= len(self.lines) else ""


#: How deeply arrays and inline tables may nest in a policy (the schema needs 2).
MAX_NESTING = 32
#: The longest number literal a policy may hold (none of its values needs more).
MAX_DIGITS = 64
_LONG_NUMBER = re.compile(rf"[0-9_]{{{MAX_DIGITS + 1},}}")


def _too_deep_or_long(text: str) -> Optional[tuple[int, str]]:
    """(line, message) for the first array or inline table nested deeper than MAX_NESTING,
    or number longer than MAX_DIGITS, outside strings and comments; else None."""
    depth = 0
    line = 1
    position = 0
    length = len(text)
    while position < length:
        char = text[position]
        if char == "\n":
            line += 1
        elif char == "#":
            end = text.find("\n", position)
            position = length if end < 0 else end
            continue
        elif char in "\"'":
            triple = text.startswith(char * 3, position)
            closing = char * 3 if triple else char
            end = position + len(closing)
            while True:
                end = text.find(closing, end)
                if end < 0 or char == "'" or text[end - 1] != "\\" or _escaped_backslash(text, end):
                    break
                end += 1
            stop = length if end < 0 else end + len(closing)
            if not triple and "\n" in text[position:stop]:
                stop = text.find("\n", position)  # an unclosed string ends at its line
            line += text.count("\n", position, stop)
            position = stop
            continue
        elif char in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return line, (f"arrays or inline tables nested over {MAX_NESTING} levels deep; "
                              "expected plain values such as max_age = \"20m\" or "
                              "active = { field = \"status\", in = [\"running\"] }")
        elif char in "]}":
            depth = max(0, depth - 1)
        elif char in "0123456789":
            match = _LONG_NUMBER.match(text, position)
            if match:
                return line, (f"got a number of {len(match.group())} digits; expected at "
                              f"most {MAX_DIGITS} digits (e.g. max_jobs = 50)")
            while position < length and text[position] in "0123456789_":
                position += 1
            continue
        position += 1
    return None


def _escaped_backslash(text: str, end: int) -> bool:
    """True when the quote at `end` follows an even run of backslashes (it closes)."""
    run = 0
    while end - run - 1 >= 0 and text[end - run - 1] == "\\":
        run += 1
    return run % 2 == 0


def _skip_value(text: str, position: int) -> int:
    """The index just past the inline value starting at `position` (at `,` or `}`)."""
    depth = 0
    quote: Optional[str] = None
    while position < len(text):
        char = text[position]
        if quote is not None:
            if char == "\\" and quote == '"':
                position += 1
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            if depth == 0:
                return position
            depth -= 1
        elif char == "," and depth == 0:
            return position
        position += 1
    return position
