"""Signed messages from the operations centre: what is signed, and the checks around it.

Remote configuration (SPEC §7) and, later, commands (SPEC §6) arrive as one JSON object
with an ``id``, a ``ts`` (integer nanoseconds) and a ``sig``: the Ed25519 signature, in
base64, of `canonical` bytes: the topic, a newline, and the canonical JSON of every other
key of the object (sorted keys, no spaces, UTF-8). Binding the topic means a message signed
for one gateway cannot be replayed to another.

This module is pure (no I/O, no crypto library): parsing, canonical bytes, the age window
and the replay guard. The signature itself is checked by `gateway.runtime.signing`, the
one place that imports `cryptography`. A refusal is a `Refused` with the reason an operator
reads in the result.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

NS = 1_000_000_000
ED25519_KEY_BYTES = 32
ED25519_SIG_BYTES = 64
# DER of SubjectPublicKeyInfo for Ed25519 (RFC 8410) is this prefix + the 32 key bytes.
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_PEM_BEGIN = "-----BEGIN PUBLIC KEY-----"
_PEM_END = "-----END PUBLIC KEY-----"
MAX_ID = 128


class Refused(ValueError):
    """A signed message that must not be acted on; ``str()`` is the reason."""


@dataclass(frozen=True, slots=True)
class SignedMessage:
    id: str
    ts: int  # ns since the epoch, as signed
    body: dict[str, Any]  # every key, ``sig`` included
    sig: bytes

    def signed_bytes(self, topic: str) -> bytes:
        return canonical(topic, self.body)


def canonical(topic: str, message: Mapping[str, Any]) -> bytes:
    """The bytes the signature covers: ``topic``, ``\\n``, canonical JSON of all but ``sig``."""
    body = {k: v for k, v in message.items() if k != "sig"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return topic.encode("utf-8") + b"\n" + text.encode("utf-8")


def id_and_ts(obj: object) -> tuple[dict[str, Any], str, int]:
    """``obj`` as an object, and the ``id`` and ``ts`` every message from the centre carries
    (a config push, a command); `Refused` with the reason when ``obj`` is no object or either
    is malformed."""
    if not isinstance(obj, dict):
        raise Refused("not a JSON object")
    msg_id = obj.get("id")
    if not isinstance(msg_id, str) or not msg_id or len(msg_id) > MAX_ID:
        raise Refused(f"'id' must be a string of 1 to {MAX_ID} characters")
    ts = obj.get("ts")
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise Refused("'ts' must be an integer (nanoseconds since the epoch)")
    return obj, msg_id, ts


def parse_signed(payload: bytes, required: Mapping[str, type]) -> SignedMessage:
    """Parse a signed message; ``required`` names the other keys it must carry, with types."""
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise Refused("not a JSON object") from None
    obj, msg_id, ts = id_and_ts(obj)
    for key, kind in required.items():
        if not isinstance(obj.get(key), kind):
            raise Refused(f"'{key}' is missing or not a {kind.__name__}")
    sig_text = obj.get("sig")
    if not isinstance(sig_text, str):
        raise Refused("unsigned: no 'sig'")
    try:
        sig = base64.b64decode(sig_text, validate=True)
    except (binascii.Error, ValueError):
        raise Refused("'sig' is not base64") from None
    if len(sig) != ED25519_SIG_BYTES:
        raise Refused(f"'sig' is {len(sig)} bytes, an Ed25519 signature is 64")
    return SignedMessage(id=msg_id, ts=ts, body=obj, sig=sig)


def sign_body(body: Mapping[str, Any], sig: bytes) -> bytes:
    """The message to publish: ``body`` plus its ``sig`` (compact JSON)."""
    return json.dumps({**body, "sig": base64.b64encode(sig).decode("ascii")},
                      separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def age_refusal(ts_ns: int, now_ns: int, max_age_s: float) -> str | None:
    """Why a message signed at ``ts_ns`` is too old (or from the future), or None."""
    age = (now_ns - ts_ns) / NS
    if age > max_age_s:
        return f"expired: signed {age:.0f}s ago, max_age is {max_age_s:g}s"
    if age < -max_age_s:
        return f"signed {-age:.0f}s in the future (clock skew over max_age {max_age_s:g}s)"
    return None


@dataclass
class ReplayGuard:
    """The ids seen within the age window. An id older than ``max_age`` needs no entry: the
    age check refuses it anyway, so the guard stays as small as the traffic of one window."""

    max_age_s: float
    seen: dict[str, int] = field(default_factory=dict)  # id -> ts (ns)

    def replayed(self, msg_id: str) -> bool:
        return msg_id in self.seen

    def remember(self, msg_id: str, ts_ns: int, now_ns: int) -> None:
        self.seen[msg_id] = ts_ns
        horizon = now_ns - int(self.max_age_s * NS) - NS
        self.seen = {k: v for k, v in self.seen.items() if v >= horizon}

    def dumps(self) -> str:
        return json.dumps(self.seen, sort_keys=True)

    @classmethod
    def loads(cls, text: str, max_age_s: float) -> ReplayGuard:
        try:
            data = json.loads(text)
        except ValueError:
            data = {}
        seen = {k: v for k, v in data.items() if isinstance(v, int)} \
            if isinstance(data, dict) else {}
        return cls(max_age_s, seen)


def check(message: SignedMessage, now_ns: int, max_age_s: float,
          guard: ReplayGuard) -> None:
    """Age and replay checks (the signature is checked first, elsewhere); raises `Refused`."""
    reason = age_refusal(message.ts, now_ns, max_age_s)
    if reason is not None:
        raise Refused(reason)
    if guard.replayed(message.id):
        raise Refused(f"replayed: id {message.id!r} was already received")


def parse_public_key(text: str) -> bytes:
    """An Ed25519 public key from its text: the 32 raw bytes in base64 (what ``sensegate
    fleet keygen`` writes to KEY.pub) or a PEM ``PUBLIC KEY`` block (``openssl pkey
    -pubout``). Raises ValueError naming what is wrong."""
    text = text.strip()
    if text.startswith(_PEM_BEGIN):
        inner = text[len(_PEM_BEGIN):].split(_PEM_END, 1)[0]
        try:
            der = base64.b64decode("".join(inner.split()), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the PEM block is not base64") from None
        if len(der) != len(_SPKI_PREFIX) + ED25519_KEY_BYTES or not der.startswith(_SPKI_PREFIX):
            raise ValueError("the PEM block is not an Ed25519 public key")
        return der[len(_SPKI_PREFIX):]
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not an Ed25519 public key (base64 or PEM)") from None
    if len(raw) != ED25519_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is 32 bytes, this one is {len(raw)}")
    return raw


def key_id(public_key: bytes) -> str:
    """A short, stable name of a public key for logs and results (not a secret)."""
    return base64.b64encode(public_key).decode("ascii")[:8]
