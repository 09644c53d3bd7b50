"""Test PKI made with the openssl CLI: a CA, a server certificate for 127.0.0.1/localhost,
a client certificate signed by the same CA, and an unrelated CA (the "wrong CA").

`make_pki(directory)` returns the paths; `mosquitto_tls_conf(pki, port)` is a Mosquitto
listener block requiring a client certificate from the CA.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = "openssl"


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path  # a CA that signed nothing here
    misnamed_cert: Path  # signed by the CA, but for elsewhere.invalid only
    misnamed_key: Path


def _run(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True)


def _ca(d: Path, name: str) -> tuple[Path, Path]:
    key, cert = d / f"{name}.key", d / f"{name}.pem"
    _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", f"/CN=sensegate test {name}",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    return cert, key


def _leaf(d: Path, name: str, ca: tuple[Path, Path], ext: str) -> tuple[Path, Path]:
    key, csr, cert = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem"
    extfile = d / f"{name}.ext"
    extfile.write_text(ext)
    _run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
         "-subj", f"/CN={name}", cwd=d)
    _run("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
         "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extfile), cwd=d)
    return cert, key


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "ca")
    other = _ca(directory, "other-ca")
    server = _leaf(directory, "server", ca,
                   "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    client = _leaf(directory, "client", ca, "extendedKeyUsage=clientAuth\n")
    misnamed = _leaf(directory, "misnamed", ca,
                     "subjectAltName=DNS:elsewhere.invalid\nextendedKeyUsage=serverAuth\n")
    return Pki(ca[0], ca[1], server[0], server[1], client[0], client[1], other[0],
               misnamed[0], misnamed[1])


def mosquitto_tls_conf(
    pki: Pki, port: int, *, require_certificate: bool = True, misnamed: bool = False
) -> str:
    """A listener on 127.0.0.1:port speaking TLS, for `Mosquitto(extra_conf=...)`."""
    cert, key = (pki.misnamed_cert, pki.misnamed_key) if misnamed else (
        pki.server_cert, pki.server_key)
    return "\n".join([
        f"listener {port} 127.0.0.1",
        f"cafile {pki.ca_cert}",
        f"certfile {cert}",
        f"keyfile {key}",
        f"require_certificate {'true' if require_certificate else 'false'}",
        "",
    ])
