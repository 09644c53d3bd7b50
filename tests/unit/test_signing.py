"""Signed messages (gateway.core.signing, gateway.runtime.signing): what is signed, and every
reason a message is refused."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.core.signing import (
    NS,
    Refused,
    ReplayGuard,
    age_refusal,
    canonical,
    check,
    parse_public_key,
    parse_signed,
    sign_body,
)
from gateway.runtime.signing import PrivateKey, public_line, verify, write_key_pair

TOPIC = "sensegate/gw-1/config/set"
NOW = 1_800_000_000 * NS


def test_canonical_bytes_are_topic_and_sorted_compact_json_without_sig() -> None:
    message = {"ts": 5, "id": "c-1", "config": "a: é\n", "sig": "xx"}
    assert canonical(TOPIC, message) == (
        TOPIC.encode() + b'\n{"config":"a: \xc3\xa9\\n","id":"c-1","ts":5}')


def test_key_order_and_spacing_of_the_sent_json_do_not_matter() -> None:
    a = canonical(TOPIC, json.loads('{"id": "x", "ts": 1, "config": "c"}'))
    b = canonical(TOPIC, json.loads('{"config":"c","ts":1,"id":"x"}'))
    assert a == b


def _signed(key: Ed25519PrivateKey, body: dict[str, object], topic: str = TOPIC) -> bytes:
    return sign_body(body, key.sign(canonical(topic, body)))


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


BODY = {"id": "c-1", "ts": NOW, "config": "gateway: {id: gw-1}\n"}


def test_a_signed_message_verifies() -> None:
    key = Ed25519PrivateKey.generate()
    message = parse_signed(_signed(key, BODY), {"config": str})
    verify(_raw(key), message, TOPIC)
    assert (message.id, message.ts, message.body["config"]) == ("c-1", NOW, BODY["config"])


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param(lambda m: {**m, "config": "evil"}, "bad signature", id="payload altered"),
        pytest.param(lambda m: {**m, "ts": m["ts"] + 1}, "bad signature", id="ts altered"),
        pytest.param(lambda m: {**m, "extra": 1}, "bad signature", id="key added"),
    ],
)
def test_an_altered_message_is_refused(change: object, reason: str) -> None:
    key = Ed25519PrivateKey.generate()
    sent = json.loads(_signed(key, BODY))
    altered = json.dumps(change(sent)).encode()  # type: ignore[operator]
    with pytest.raises(Refused, match=reason):
        verify(_raw(key), parse_signed(altered, {"config": str}), TOPIC)


def test_a_message_signed_for_another_gateway_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    message = parse_signed(_signed(key, BODY, "sensegate/gw-2/config/set"), {"config": str})
    with pytest.raises(Refused, match="bad signature"):
        verify(_raw(key), message, TOPIC)


def test_a_message_signed_by_another_key_is_refused() -> None:
    signer, trusted = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    message = parse_signed(_signed(signer, BODY), {"config": str})
    with pytest.raises(Refused, match=r"bad signature: not signed by key \S{8}"):
        verify(_raw(trusted), message, TOPIC)


SIG = base64.b64encode(bytes(64)).decode()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param(b"\xff", "not a JSON object", id="not utf-8"),
        pytest.param(b"[1]", "not a JSON object", id="a list"),
        pytest.param(json.dumps({"ts": 1, "config": "", "sig": SIG}).encode(),
                     "'id' must be a string", id="no id"),
        pytest.param(json.dumps({"id": "x" * 129, "ts": 1, "config": "", "sig": SIG}).encode(),
                     "'id' must be a string of 1 to 128", id="id too long"),
        pytest.param(json.dumps({"id": "a", "ts": "1", "config": "", "sig": SIG}).encode(),
                     "'ts' must be an integer", id="ts a string"),
        pytest.param(json.dumps({"id": "a", "ts": True, "config": "", "sig": SIG}).encode(),
                     "'ts' must be an integer", id="ts a bool"),
        pytest.param(json.dumps({"id": "a", "ts": 1, "sig": SIG}).encode(),
                     "'config' is missing or not a str", id="no config"),
        pytest.param(json.dumps({"id": "a", "ts": 1, "config": ""}).encode(),
                     "unsigned", id="no sig"),
        pytest.param(json.dumps({"id": "a", "ts": 1, "config": "", "sig": "!!"}).encode(),
                     "not base64", id="sig not base64"),
        pytest.param(json.dumps({"id": "a", "ts": 1, "config": "", "sig": "AAAA"}).encode(),
                     "'sig' is 3 bytes", id="sig too short"),
    ],
)
def test_malformed_messages_are_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        parse_signed(payload, {"config": str})


@pytest.mark.parametrize(
    ("age_s", "expected"),
    [
        pytest.param(0, None, id="now"),
        pytest.param(299, None, id="just within"),
        pytest.param(301, "expired: signed 301s ago, max_age is 300s", id="expired"),
        pytest.param(-299, None, id="slightly ahead"),
        pytest.param(-400, "signed 400s in the future (clock skew over max_age 300s)",
                     id="future"),
    ],
)
def test_age_window(age_s: int, expected: str | None) -> None:
    assert age_refusal(NOW - age_s * NS, NOW, 300) == expected


def test_replay_guard_refuses_an_id_seen_and_survives_a_restart() -> None:
    guard = ReplayGuard(300)
    message = parse_signed(sign_body(BODY, bytes(64)), {"config": str})
    check(message, NOW, 300, guard)
    guard.remember(message.id, message.ts, NOW)
    with pytest.raises(Refused, match="replayed: id 'c-1' was already received"):
        check(message, NOW, 300, guard)
    again = ReplayGuard.loads(guard.dumps(), 300)
    with pytest.raises(Refused, match="replayed"):
        check(message, NOW + 10 * NS, 300, again)


def test_replay_guard_forgets_ids_the_age_check_refuses_anyway() -> None:
    guard = ReplayGuard(300)
    guard.remember("old", NOW, NOW)
    guard.remember("new", NOW + 1000 * NS, NOW + 1000 * NS)
    assert set(guard.seen) == {"new"}


def test_replay_guard_load_tolerates_a_damaged_file() -> None:
    assert ReplayGuard.loads("{not json", 300).seen == {}
    assert ReplayGuard.loads('{"a": 1, "b": "x"}', 300).seen == {"a": 1}


def test_public_key_from_base64_line_and_pem() -> None:
    key = Ed25519PrivateKey.generate()
    raw = _raw(key)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    assert parse_public_key(public_line(raw) + "\n") == raw
    assert parse_public_key(pem.decode()) == raw


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("AAAA", "32 bytes, this one is 3", id="short"),
        pytest.param("not a key", "not an Ed25519 public key", id="text"),
        pytest.param("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
                     "not an Ed25519 public key", id="pem of something else"),
    ],
)
def test_bad_public_keys(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_public_key(text)


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(
    tmp_path: object,
) -> None:
    import os
    from pathlib import Path

    path = str(Path(str(tmp_path)) / "fleet-key")
    public = write_key_pair(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    key = PrivateKey.load(path)
    assert key.public_key == public
    assert parse_public_key(Path(path + ".pub").read_text()) == public
    assert "BEGIN" not in repr(key)
    with pytest.raises(FileExistsError):
        write_key_pair(path)
