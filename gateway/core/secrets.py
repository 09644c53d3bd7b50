"""Secrets: the `Secret` value type, and the registry of every form of a secret the process
has seen, scrubbed from any text.

The config loader registers the value of each key that holds a secret (`spec(secret=True)`
on the model, i.e. passwords and tokens, written literally or as ``${VAR}``), and HTTP Basic
credentials as the header sends them. Logs (`gateway.runtime.logs`) and error messages pass
their text through `scrub`, a last line of defence behind `model.Secret`. A secret is
registered in every form it may travel in: as written, base64 (standard and URL-safe, with
and without padding), and URL-encoded (``%40`` and ``+`` forms). Values shorter than
`MIN_LENGTH` are not registered: scrubbing ``ab`` from every line would garble the logs
and hide nothing. Pure: no I/O.
"""

from __future__ import annotations

import base64
from urllib.parse import quote, quote_plus

MIN_LENGTH = 3
MASK = "***"


class Secret:
    """A string that never shows itself in repr, str, logs or error messages."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


_forms: set[str] = set()
_ordered: tuple[str, ...] = ()  # _forms, longest first


def _add(*new: str) -> None:
    global _ordered
    before = len(_forms)
    _forms.update(new)
    if len(_forms) != before:
        _ordered = tuple(sorted(_forms, key=len, reverse=True))


def forms(value: str) -> set[str]:
    """Every spelling of ``value`` that may reach a text: raw, base64, URL-encoded."""
    raw = value.encode("utf-8")
    out = {value, quote(value, safe=""), quote_plus(value, safe="")}
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = encoded.decode("ascii")
        out.update((text, text.rstrip("=")))
    return {f for f in out if len(f) >= MIN_LENGTH}


def register(value: str | None) -> None:
    """Never let ``value``, in any form, reach a log line or an error message."""
    if value is not None and len(value) >= MIN_LENGTH:
        _add(*forms(value))


def register_basic(username: str | None, password: str | None) -> None:
    """HTTP Basic credentials: the password, and ``user:password`` as the header encodes it."""
    if password is None or len(password) < MIN_LENGTH:
        return
    register(password)
    credentials = f"{username or ''}:{password}".encode()
    for encoded in (base64.b64encode(credentials), base64.urlsafe_b64encode(credentials)):
        text = encoded.decode("ascii")
        _add(text, text.rstrip("="))


def scrub(text: str) -> str:
    """``text`` with every registered form replaced by ``***`` (longest forms first, so a
    base64 form is not half-replaced by a shorter secret it happens to contain)."""
    for form in _ordered:
        if form in text:
            text = text.replace(form, MASK)
    return text


def clear() -> None:
    """Forget every registered secret (tests, and a reload that drops a credential)."""
    global _ordered
    _forms.clear()
    _ordered = ()
