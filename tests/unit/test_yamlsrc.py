from __future__ import annotations

import math
from typing import Any

import pytest
import yaml

from gateway.config.source import Node, describe, parse, resolve_plain, substitute
from gateway.core.errors import ConfigIssue


def _parse(text: str, env: dict[str, str] | None = None) -> tuple[Node | None, list[str]]:
    issues: list[ConfigIssue] = []
    node = parse(text, "f.yaml", env or {}, issues)
    return node, [str(i) for i in issues]


@pytest.mark.parametrize(("text", "value"), [
    pytest.param("1", 1, id="int"),
    pytest.param("-7", -7, id="negative-int"),
    pytest.param("0x1F", 31, id="hex"),
    pytest.param("0o17", 15, id="octal"),
    pytest.param("1.5", 1.5, id="float"),
    pytest.param("1e3", 1000.0, id="exponent"),
    pytest.param("true", True, id="true"),
    pytest.param("False", False, id="false"),
    pytest.param("~", None, id="tilde-null"),
    pytest.param("null", None, id="null"),
    pytest.param("on", "on", id="yaml-1.1-on-is-a-string"),
    pytest.param("no", "no", id="yaml-1.1-no-is-a-string"),
    pytest.param("N", "N", id="parity-n-is-a-string"),
    pytest.param("10.0.0.21", "10.0.0.21", id="ip-address"),
    pytest.param("500ms", "500ms", id="duration"),
])
def test_resolve_plain(text: str, value: Any) -> None:
    got = resolve_plain(text)
    assert got == value and type(got) is type(value)


def test_resolve_special_floats() -> None:
    assert resolve_plain(".inf") == math.inf
    assert math.isnan(resolve_plain(".nan"))


def test_positions_are_one_based() -> None:
    node, issues = _parse("a:\n  b: [1, 2]\n  c: x\n")
    assert not issues and node is not None
    b = node.get("a").get("b")  # type: ignore[union-attr]
    assert (b.line, b.col) == (2, 6)
    assert (b.value[1].line, b.value[1].col) == (2, 10)
    assert node.get("a").key_node("c").line == 3  # type: ignore[union-attr]


def test_every_duplicate_key_is_reported() -> None:
    _, issues = _parse("a: 1\nb: 2\na: 3\nb: 4\na: 5\n")
    assert issues == [
        "f.yaml:3:1: a: duplicate key 'a' (first at line 1)",
        "f.yaml:4:1: b: duplicate key 'b' (first at line 2)",
        "f.yaml:5:1: a: duplicate key 'a' (first at line 1)",
    ]


def test_duplicate_key_path_is_nested() -> None:
    _, issues = _parse("devices:\n  - name: a\n    name: b\n")
    assert issues == ["f.yaml:3:5: devices[0].name: duplicate key 'name' (first at line 2)"]


def test_syntax_error_has_a_position() -> None:
    node, issues = _parse("a: 1\n b: 2\n")
    assert node is None
    assert issues == ["f.yaml:2:2: indentation: this line is indented more than line 1, whose "
                      "key already has a value; keys of one mapping start in the same column"]


def test_empty_document() -> None:
    assert _parse("") == (None, [])


def test_anchors_and_merge_keys() -> None:
    node, issues = _parse("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n")
    assert not issues and node is not None
    assert node.plain() == {"base": {"x": 1, "y": 2}, "other": {"x": 1, "y": 3}}


def test_quoted_scalars_stay_strings() -> None:
    node, _ = _parse("a: '1'\nb: \"true\"\nc: 017\n")
    assert node is not None
    assert node.plain() == {"a": "1", "b": "true", "c": 17}
    assert node.get("c").text == "017"  # type: ignore[union-attr]


@pytest.mark.parametrize(("text", "env", "out", "used", "problems"), [
    pytest.param("${A}", {"A": "x"}, "x", ("A",), [], id="whole"),
    pytest.param("pre-${A}-${B}", {"A": "1", "B": "2"}, "pre-1-2", ("A", "B"), [], id="two"),
    pytest.param("$${A}", {"A": "x"}, "${A}", (), [], id="escaped"),
    pytest.param("cost $5", {}, "cost $5", (), [], id="lone-dollar"),
    pytest.param("${A}", {}, "${A}", ("A",), ["environment variable ${A} is not set"],
                 id="missing"),
    pytest.param("${A b}", {}, "${A b}", (), ["'${A b}' is not a valid variable reference"],
                 id="bad-name"),
    pytest.param("${A", {}, "${A", (), ["'${' is not closed; write '$${' for a literal '${'"],
                 id="unclosed"),
])
def test_substitute(
    text: str, env: dict[str, str], out: str, used: tuple[str, ...], problems: list[str],
) -> None:
    got_problems: list[str] = []
    assert substitute(text, env, got_problems) == (out, used)
    assert got_problems == problems


def test_substituted_plain_values_are_resolved_again() -> None:
    node, issues = _parse("port: ${P}\nname: '${P}'\n", {"P": "1883"})
    assert not issues and node is not None
    assert node.plain() == {"port": 1883, "name": "1883"}
    assert node.get("port").env == ("P",)  # type: ignore[union-attr]


def test_substituted_values_are_never_described() -> None:
    """Named, not quoted; whether a log masks them depends on the key (test_secrets.py)."""
    node, issues = _parse("password: ${PW}\n", {"PW": "hunter2-very-secret"})
    assert not issues and node is not None
    value = node.get("password")
    assert value is not None
    assert describe(value) == "the value of ${PW}"


def test_missing_variable_marks_the_node_bad() -> None:
    node, issues = _parse("a: ${NOPE}\n")
    assert issues == ["f.yaml:1:4: a: environment variable ${NOPE} is not set"]
    assert node is not None and node.get("a").bad  # type: ignore[union-attr]


@pytest.mark.parametrize(("text", "described"), [
    pytest.param("a: x", "'x'", id="string"),
    pytest.param("a: 3", "3", id="int"),
    pytest.param("a: [1]", "a list", id="list"),
    pytest.param("a: {b: 1}", "a mapping", id="mapping"),
    pytest.param("a:", "null", id="null"),
    pytest.param("a: 'it''s'", '"it\'s"', id="quote-in-string"),
])
def test_describe(text: str, described: str) -> None:
    node, _ = _parse(text)
    assert node is not None
    assert describe(node.get("a")) == described  # type: ignore[arg-type]


def test_pure_python_fallback_gives_the_same_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "a: [1, x, {b: '2'}]\nc: ${V}\nc: 3\n"
    fast = _parse(text, {"V": "on"})
    monkeypatch.setattr("gateway.config.source._FAST_LOADER", yaml.SafeLoader)
    slow = _parse(text, {"V": "on"})
    assert fast[0] is not None and slow[0] is not None
    assert fast[0].plain() == slow[0].plain() == {"a": [1, "x", {"b": "2"}], "c": "on"}
    assert fast[1] == slow[1] == ["f.yaml:3:1: c: duplicate key 'c' (first at line 2)"]


def test_merge_of_an_aliased_list_merges_each_mapping() -> None:
    node, issues = _parse("a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nl: &l [*a, *b]\n"
                          "c:\n  <<: *l\n  z: 3\n")
    assert not issues and node is not None
    assert node.plain()["c"] == {"x": 1, "y": 1, "z": 3}


def test_an_alias_is_the_anchored_node_itself() -> None:
    node, issues = _parse("a: &p {x: 1}\nb: *p\n&k key: v\nother: *k\n")
    assert not issues and node is not None
    assert node.get("a") is node.get("b")
    other = node.get("other")
    assert other is not None and other.value == "key" and (other.line, other.col) == (3, 1)


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("a: &x 1\nb: &x 2\n", "2:4: yaml syntax error: second occurrence",
                 id="duplicate-anchor"),
    pytest.param("a: 1\n---\nb: *nope\n", "a second document", id="second-document"),
])
def test_what_the_composer_refuses_is_worded_by_it(text: str, message: str) -> None:
    node, issues = _parse(text)
    assert node is None and len(issues) == 1 and message in issues[0]


def test_an_alias_bomb_before_a_syntax_error_reports_the_syntax_error() -> None:
    lines = ["x0: &x0 [a, a, a, a, a, a, a, a, a, a]"]
    lines += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 10) + "]" for i in range(1, 9)]
    node, issues = _parse("\n".join(lines) + "\ny: [1, 2\n")
    assert node is None and len(issues) == 1
    assert "the '[' opened here is not closed" in issues[0]
