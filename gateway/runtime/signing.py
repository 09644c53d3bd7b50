"""Ed25519 through `cryptography`: the one module that touches the crypto library.

`gateway.core.signing` decides what is signed and checks age and replays; this module
signs, verifies and makes keys. The private key is a PKCS#8 PEM file (mode 0600) that lives
only on the operator's machine; the public key is 32 bytes, written as one base64 line.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from gateway.core.signing import Refused, SignedMessage, key_id


def verify(public_key: bytes, message: SignedMessage, topic: str) -> None:
    """Raise `Refused` unless ``message`` carries a valid signature by ``public_key``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            message.sig, message.signed_bytes(topic))
    except InvalidSignature:
        raise Refused(f"bad signature: not signed by key {key_id(public_key)}, or altered "
                      "on the way") from None


def generate() -> tuple[bytes, bytes]:
    """A new key pair: (private key as PKCS#8 PEM, public key as 32 raw bytes)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    return pem, raw


def public_line(public_key: bytes) -> str:
    """How a public key is written: one base64 line (KEY.pub, ``fleet.public_key``)."""
    return base64.b64encode(public_key).decode("ascii")


class PrivateKey:
    """An Ed25519 private key loaded from a PEM file; never printed."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def load(cls, path: str) -> PrivateKey:
        """Raise ValueError with the reason when ``path`` is not an Ed25519 private key."""
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise ValueError(f"cannot read key {path}: {(exc.strerror or str(exc)).lower()}") \
                from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise ValueError(f"{path} is not an unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 key")
        return cls(key)

    @property
    def public_key(self) -> bytes:
        return self._key.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def __repr__(self) -> str:
        return f"PrivateKey(public {key_id(self.public_key)})"


def write_key_pair(path: str) -> bytes:
    """Write a new private key to ``path`` (0600, never overwritten) and its public key to
    ``path.pub``; return the public key. Raise FileExistsError when either exists."""
    pem, raw = generate()
    for target in (path, path + ".pub"):
        if os.path.exists(target):
            raise FileExistsError(target)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    with open(path + ".pub", "w", encoding="ascii") as fh:
        fh.write(public_line(raw) + "\n")
    return raw
