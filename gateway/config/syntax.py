"""YAML syntax errors in a technician's words, at the line and column that need the fix.

PyYAML's pure-Python parser reports what its state machine expected (``expected <block end>,
but found '<block mapping start>'``); `explain` turns the usual causes into what to change:
indentation that lines up with nothing, a missing ``:`` or a missing space after it, a tab,
a second ``:`` in a value, a quote or bracket never closed. Anything else keeps the parser's
own words after ``yaml syntax error:``. Pure: text in, (line, col, message) out.
"""

from __future__ import annotations

import re
from typing import Any

# A "key: value" line whose colon has no space after it ("port:1883").
_NO_SPACE = re.compile(r"^\s*(?:- )?[^\s:#'\"][^:#]*:[^\s/:]")
# A line that holds a key with a value on the same line ("host: broker").
_KEY_VALUE = re.compile(r"^\s*(?:- )?[^\s:#][^:#]*:\s+\S")
_ENV_FILE_LINE = re.compile(r"\s*(?:export\s+)?[A-Za-z_][A-Za-z0-9_]*=")
ENV_FILE = ("this looks like an environment file (KEY=VALUE lines), not a YAML config; its "
            "content is not shown")
_TOKEN_NAMES = {"'-'": "a list item ('- ')", "'<block mapping start>'": "a key",
                "'<block sequence start>'": "a list", "'<scalar>'": "a value",
                "'?'": "a '?'"}


def looks_like_env_file(text: str) -> bool:
    """Whether the first line that is not blank or a comment reads ``KEY=VALUE``: an
    EnvironmentFile given where a config was expected, whose values must not be quoted."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return bool(_ENV_FILE_LINE.match(line))
    return False


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _previous(lines: list[str], index: int) -> int | None:
    """The index of the nearest non-blank, non-comment line before ``index``."""
    for i in range(index - 1, -1, -1):
        stripped = lines[i].strip()
        if stripped and not stripped.startswith("#"):
            return i
    return None


def _mark(mark: Any) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def explain(exc: Any, text: str) -> tuple[int, int, str]:
    """(line, col, message) for a PyYAML ``MarkedYAMLError`` raised on ``text``."""
    if looks_like_env_file(text):
        return 1, 1, ENV_FILE
    problem = (exc.problem or exc.context or "cannot parse").rstrip(".")
    context = exc.context or ""
    line, col = _mark(exc.problem_mark or exc.context_mark)
    lines = text.splitlines()
    here = lines[line - 1] if 0 < line <= len(lines) else ""

    if "\t" in here[:max(col, 1)] or problem.startswith("found character '\\t'"):
        tab = here.find("\t")
        return line, (tab + 1 if tab >= 0 else col), (
            "a tab character: YAML indents with spaces only; replace the tab with spaces")
    if problem.startswith("found character"):
        char = problem.split("'")[1] if "'" in problem else "?"
        return line, col, (f"a value cannot start with '{char}': put the value in quotes "
                           f"('{char}...')")
    if problem == "mapping values are not allowed here":
        return _colon_not_allowed(lines, line, col)
    if problem.startswith("expected <block end>, but found"):
        found = problem.rsplit("found ", 1)[1]
        what = _TOKEN_NAMES.get(found, found)
        start_line, start_col = _mark(exc.context_mark)
        if found == "'-'":
            return line, col, ("indentation: a list item ('- ') where a key was expected; a "
                               "mapping cannot mix 'key: value' lines and '- item' lines at "
                               "one indentation")
        if "block mapping" in context:
            return line, col, (f"indentation: {what} at column {col}, but the keys of the "
                               f"mapping at line {start_line} start at column {start_col}; "
                               "indent the keys of one mapping by the same number of spaces")
        return line, col, (f"indentation: {what} at column {col} lines up with no key or list "
                           "item above; indent the keys of one mapping by the same number of "
                           "spaces")
    if problem == "could not find expected ':'":
        start_line, start_col = _mark(exc.context_mark)
        start = lines[start_line - 1] if 0 < start_line <= len(lines) else ""
        if _NO_SPACE.match(start):
            return start_line, start.index(":") + 1, ("missing space after ':' (write "
                                                      "'key: value')")
        return start_line, start_col, "missing ':' after the key (write 'key: value')"
    if problem == "found unexpected end of stream" and "quoted scalar" in context:
        start_line, start_col = _mark(exc.context_mark)
        return start_line, start_col, "a quote opened here is never closed"
    if "flow sequence" in context or "flow mapping" in context:
        opener, closer = ("[", "]") if "sequence" in context else ("{", "}")
        start_line, start_col = _mark(exc.context_mark)
        return start_line, start_col, (f"the '{opener}' opened here is not closed: a "
                                       f"'{closer}' (or a ',' between items) is missing "
                                       f"before line {line}")
    if problem.startswith("found undefined alias"):
        name = problem.split("'")[1] if "'" in problem else ""
        return line, col, (f"'*{name}' refers to an anchor '&{name}' that is not defined "
                           "above it")
    if problem.startswith("found unknown escape character"):
        return line, col, (f"{problem.removeprefix('found ')} in a double-quoted value; "
                           "use single quotes to keep backslashes as written")
    if problem.startswith("but found another document") or "single document" in context:
        return line, col, "a second document ('---'): a config file holds one document"
    return line, col, f"yaml syntax error: {problem}"


def _colon_not_allowed(lines: list[str], line: int, col: int) -> tuple[int, int, str]:
    """PyYAML's 'mapping values are not allowed here': a ':' it did not expect."""
    here = lines[line - 1] if 0 < line <= len(lines) else ""
    before = here[:col - 1]
    if re.search(r":\s", before):
        return line, col, ("a second ':' on this line: put the value in quotes "
                           "(key: 'a: b')")
    prev_index = _previous(lines, line - 1)
    if prev_index is not None:
        prev = lines[prev_index]
        if _NO_SPACE.match(prev):
            colon = prev.index(":")
            return prev_index + 1, colon + 1, "missing space after ':' (write 'key: value')"
        if _indent(here) > _indent(prev) and _KEY_VALUE.match(prev):
            return line, _indent(here) + 1, (
                f"indentation: this line is indented more than line {prev_index + 1}, whose "
                "key already has a value; keys of one mapping start in the same column")
        if ":" not in prev.split("#", 1)[0] and _indent(prev) == _indent(here):
            return prev_index + 1, _indent(prev) + 1, (
                "missing ':' after the key (write 'key: value')")
    return line, col, ("a ':' is not allowed here: check the indentation and that the "
                       "line above has its ':'")
