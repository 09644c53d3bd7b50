"""Broken configs under tests/cases/<name>/: gateway.yaml + load.err (the exact issue lines).

Each case is loaded from inside its folder so file names in the messages are relative
(``gateway.yaml:14:7: ...``, ``profiles/x.yaml:3:5: ...``). An optional ``env`` file holds
NAME=VALUE lines for ``${NAME}`` substitution; no such value may appear in any message.
Regenerate a case's load.err after a deliberate wording change with
``SENSEGATE_REGEN_CASES=1 pytest tests/unit/test_config_cases.py`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config.load import load_gateway_config
from gateway.core.errors import ConfigError

CASES = Path(__file__).resolve().parent.parent / "cases"


def _cases() -> list[Path]:
    return sorted(p.parent for p in CASES.glob("*/load.err"))


def _env(case: Path) -> dict[str, str]:
    env_file = case / "env"
    if not env_file.exists():
        return {}
    lines = env_file.read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip())


def test_corpus_is_large_enough() -> None:
    assert len(_cases()) >= 30


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in _cases()])
def test_case(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(case)
    env = _env(case)
    with pytest.raises(ConfigError) as info:
        load_gateway_config("gateway.yaml", env=env)
    got = [str(issue) for issue in info.value.issues]
    if os.environ.get("SENSEGATE_REGEN_CASES"):
        (case / "load.err").write_text("".join(f"{line}\n" for line in got), encoding="utf-8")
    expected = (case / "load.err").read_text(encoding="utf-8").splitlines()
    assert got == expected
    for value in env.values():
        assert value not in str(info.value)
