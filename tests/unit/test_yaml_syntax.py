"""YAML syntax errors worded for a technician, at the line and column to fix."""

from __future__ import annotations

import pytest
import yaml

from gateway.config.source import parse
from gateway.config.syntax import explain
from gateway.core.errors import ConfigIssue


def _explain(text: str) -> tuple[int, int, str]:
    with pytest.raises(yaml.MarkedYAMLError) as info:
        yaml.compose(text, Loader=yaml.SafeLoader)
    return explain(info.value, text)


@pytest.mark.parametrize(("text", "line", "col", "words"), [
    pytest.param("a:\n  b: 1\n c: 2\n", 3, 2, "indentation: a key at column 2, but the keys "
                 "of the mapping at line 1 start at column 1", id="key-indented-by-one"),
    pytest.param("d:\n  - name: a\n    x: 1\n   y: 2\n", 4, 4, "lines up with no key or list "
                 "item above", id="item-key-out-of-line"),
    pytest.param("a:\n  b: 1\n    c: 2\n", 3, 5, "indented more than line 2, whose key "
                 "already has a value", id="indented-under-a-value"),
    pytest.param("a:\n  b: 1\n  - c\n", 3, 3, "a mapping cannot mix 'key: value' lines and "
                 "'- item' lines", id="key-and-item-mixed"),
    pytest.param("a:\n  host broker\n  port: 1\n", 2, 3, "missing ':' after the key",
                 id="missing-colon"),
    pytest.param("a:1\nb: 2\n", 1, 2, "missing space after ':'", id="no-space-after-colon"),
    pytest.param("a:\n\tb: 1\n", 2, 1, "a tab character: YAML indents with spaces only",
                 id="tab-indent"),
    pytest.param("a:\n  b: x\n \tc: 1\n", 3, 2, "a tab character", id="tab-after-space"),
    pytest.param("a: b: c\n", 1, 5, "a second ':' on this line: put the value in quotes",
                 id="colon-in-value"),
    pytest.param("a: 'x\nb: 1\n", 1, 4, "a quote opened here is never closed",
                 id="unclosed-quote"),
    pytest.param("a: [1, 2\nb: 1\n", 1, 4, "the '[' opened here is not closed",
                 id="unclosed-bracket"),
    pytest.param("a: {x: 1\nb: 1\n", 1, 4, "the '{' opened here is not closed",
                 id="unclosed-brace"),
    pytest.param("a: *nope\n", 1, 4, "'*nope' refers to an anchor '&nope' that is not "
                 "defined", id="undefined-alias"),
    pytest.param("a: @x\n", 1, 4, "a value cannot start with '@': put the value in quotes",
                 id="reserved-character"),
    pytest.param('a: "\\q"\n', 1, 6, "use single quotes to keep backslashes",
                 id="bad-escape"),
])
def test_syntax_errors_say_what_to_fix(text: str, line: int, col: int, words: str) -> None:
    got_line, got_col, message = _explain(text)
    assert (got_line, got_col) == (line, col), message
    assert words in message
    assert "<block" not in message and "expected <" not in message


def test_a_second_document_is_refused_in_words() -> None:
    issues: list[ConfigIssue] = []
    assert parse("a: 1\n---\nb: 2\n", "x.yaml", {}, issues) is None
    assert [i.message for i in issues] == [
        "a second document ('---'): a config file holds one document"]


def test_the_fast_and_the_pure_parser_give_the_same_words() -> None:
    """libyaml fails first; the message comes from the pure parser whatever is installed."""
    issues: list[ConfigIssue] = []
    assert parse("a:\n\tb: 1\n", "x.yaml", {}, issues) is None
    assert [str(i) for i in issues] == [
        "x.yaml:2:1: a tab character: YAML indents with spaces only; replace the tab with "
        "spaces"]
