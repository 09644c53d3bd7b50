"""TLS contexts and readable connection errors for the MQTT clients (publisher and bridge).

`build_tls_context` turns a `TlsConfig` into an ``ssl.SSLContext`` for
``aiomqtt.Client(tls_context=...)``: the CA file (or the system store when absent), the
client certificate and key when given, hostname checking unless ``insecure``. File problems
are `PublishError`s naming the file, never its content.

`describe_mqtt_error` turns what aiomqtt/paho/ssl raise into one lower-case line naming
``host:port``, e.g. ``tls handshake with broker:8883 failed: certificate verify failed:
unable to get local issuer certificate``. No secret is ever part of it: aiomqtt errors carry
return codes and socket errors, never the credentials.
"""

from __future__ import annotations

import re
import ssl

from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from gateway.core.errors import PublishError
from gateway.core.model import TlsConfig


def _no_password() -> bytes:
    return b""  # an encrypted key fails to load instead of prompting on the terminal


def build_tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """An ``ssl.SSLContext`` verifying the broker with ``tls.ca_file`` (else the system CAs)."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    except FileNotFoundError as exc:
        raise PublishError(f"cannot read tls ca_file '{tls.ca_file}': no such file") from exc
    except (OSError, ssl.SSLError) as exc:
        raise PublishError(
            f"cannot load tls ca_file '{tls.ca_file}': {_reason(exc)}"
        ) from exc
    if tls.cert_file or tls.key_file:
        if not tls.cert_file:
            raise PublishError("tls key_file is set without cert_file")
        try:
            ctx.load_cert_chain(tls.cert_file, tls.key_file, password=_no_password)
        except FileNotFoundError as exc:
            missing = exc.filename or f"{tls.cert_file}' or '{tls.key_file}"
            raise PublishError(f"cannot read tls file '{missing}': no such file") from exc
        except (OSError, ssl.SSLError) as exc:
            key = tls.key_file or tls.cert_file
            raise PublishError(
                f"cannot load tls client certificate '{tls.cert_file}' with key '{key}': "
                f"{_reason(exc)} (the key must match the certificate and not be encrypted)"
            ) from exc
    ctx.check_hostname = not tls.insecure
    return ctx


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = (exc.verify_message or "").rstrip(".")
        return f"certificate verify failed: {detail}".lower().rstrip(": ")
    if isinstance(exc, ssl.SSLError):
        text = exc.reason or str(exc)
        return str(text).replace("_", " ").lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return (str(exc) or type(exc).__name__).lower()


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLError):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


# CONNACK refusals by code: MQTT 3.1.1 return codes 1-5 and MQTT 5 reason codes >= 0x80.
CONNACK_REFUSALS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad username or password",
    5: "not authorised (check username, password and client certificate)",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad username or password",
    0x87: "not authorised (check username, password and client certificate)",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8C: "bad authentication method",
}


def connack_code(exc: BaseException) -> int | None:
    """The CONNACK refusal code of ``exc`` when it is one (aiomqtt's ``MqttConnectError``)."""
    if not isinstance(exc, MqttConnectError):
        return None
    rc = exc.rc
    if isinstance(rc, ReasonCode):
        return int(rc.value)
    return rc


def describe_mqtt_error(exc: BaseException, host: str, port: int) -> str:
    """One lower-case line saying what went wrong talking to ``host:port``.

    Recognised by type and code where the library gives them (TLS errors, CONNACK refusals);
    by text only where aiomqtt passes on nothing else (it re-raises socket errors and time-outs
    as a plain ``MqttError`` carrying the message).
    """
    where = f"{host}:{port}"
    ssl_exc = _ssl_cause(exc)
    if ssl_exc is not None:
        return f"tls handshake with {where} failed: {_reason(ssl_exc)}"
    code = connack_code(exc)
    if code is not None:
        reason = CONNACK_REFUSALS.get(code, f"reason code {code}")
        return f"broker {where} refused the connection: {reason}"
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to {where}: connection refused"
    text = str(exc)
    low = text.lower()
    alert = re.search(r"\[ssl: [a-z0-9_]+\] ([^(]+)", low)
    if alert is not None:  # "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert ..."
        return f"tls handshake with {where} failed: {alert.group(1).strip()}"
    if "certificate" in low or "ssl" in low or "tls" in low:
        return f"tls handshake with {where} failed: {low}"
    if "connection refused" in low:  # aiomqtt re-raised ConnectionRefusedError as text
        return f"cannot connect to {where}: connection refused"
    if "timed out" in low:
        return f"mqtt connection to {where} timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot connect to {where}: {exc.strerror.lower()}"
    return f"mqtt connection to {where} failed: {low or type(exc).__name__.lower()}"
