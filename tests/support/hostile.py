"""The hostile-payload corpus (tests/cases/hostile_payloads/cases.json), shared by the
ingest unit tests and the bridge's end-to-end test."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parents[1] / "cases" / "hostile_payloads" / "cases.json"


def hostile_cases() -> tuple[str, list[dict[str, Any]]]:
    """The default topic and the cases."""
    doc = json.loads(CORPUS.read_text())
    return doc["default_topic"], doc["cases"]


def hostile_payload(case: dict[str, Any]) -> bytes:
    """A case's payload bytes; large and deeply nested ones are generated, not stored."""
    if "payload_b64" in case:
        return base64.b64decode(case["payload_b64"])
    if "payload_repeat" in case:
        head, n, tail = case["payload_repeat"]
        return (head + "x" * n + tail).encode()
    if "payload_nested" in case:
        n = case["payload_nested"]
        return ('{"a":' * n + "1" + "}" * n).encode()
    return case["payload"].encode()
