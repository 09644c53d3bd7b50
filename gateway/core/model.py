"""Typed, validated configuration and reading objects shared by every module.

The config dataclasses are also the config language's declaration: each field is written
once, as ``field(default=..., metadata=spec(...))`` (type and default here; help, limits
and aliases in its `gateway.core.declare.spec`), and validation, the JSON Schema, the
loader and docs/config-reference.md are derived from them. `gateway.config.load` builds
these from YAML (after validation, with defaults applied); everything else only ever sees
these objects, never raw YAML. Durations are float seconds, sizes are int bytes. The objects
are frozen: a SIGHUP reload builds new ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, get_args

from gateway.core.declare import spec
from gateway.core.secrets import Secret as Secret  # the config values that hold one

Table = Literal["holding", "input", "coil", "discrete"]
DataType = Literal[
    "int16", "uint16", "int32", "uint32", "int64", "uint64",
    "float32", "float64", "bool", "string",
    "int8_high", "int8_low", "uint8_high", "uint8_low", "float16",
]
ByteOrder4 = Literal["ABCD", "DCBA", "BADC", "CDAB"]
# 64-bit layouts the four orders do not cover: bytes A (most significant) to H as they
# appear on the wire, in address order (docs/drivers.md, "64-bit word orders").
WordOrder64 = Literal["CDABGHEF", "EFGHABCD", "DCBAHGFE", "FEHGBADC"]
ByteOrder = Literal[ByteOrder4, WordOrder64]
Driver = Literal["modbus-tcp", "modbus-rtu", "modbus-rtu-over-tcp", "serial-line"]
Parity = Literal["N", "E", "O"]
Quality = Literal["good", "bad", "invalid"]
PayloadFormat = Literal["json", "influx"]
InfluxApi = Literal["v1", "v2"]
Output = Literal["auto", "float"]
Aggregate = Literal["min", "max", "mean", "last", "count"]
Addressing = Literal["protocol", "one-based", "modicon"]

TABLES: tuple[str, ...] = get_args(Table)
BIT_TABLES: tuple[str, ...] = ("coil", "discrete")
DATA_TYPES: tuple[str, ...] = get_args(DataType)
BYTE_ORDERS: tuple[ByteOrder, ...] = get_args(ByteOrder4)
WORD_ORDERS_64: tuple[ByteOrder, ...] = get_args(WordOrder64)
ALL_BYTE_ORDERS: tuple[ByteOrder, ...] = BYTE_ORDERS + WORD_ORDERS_64
SIXTY_FOUR_BIT_TYPES: tuple[str, ...] = ("int64", "uint64", "float64")
FLOAT_TYPES: tuple[str, ...] = ("float16", "float32", "float64")
# The raw values each integer type holds.
INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-(1 << 15), (1 << 15) - 1), "uint16": (0, (1 << 16) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1), "uint32": (0, (1 << 32) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1), "uint64": (0, (1 << 64) - 1),
    "int8_high": (-128, 127), "int8_low": (-128, 127),
    "uint8_high": (0, 255), "uint8_low": (0, 255),
}
INTEGER_TYPES: tuple[str, ...] = tuple(INTEGER_RANGES)
DRIVERS: tuple[str, ...] = get_args(Driver)
AGGREGATES: tuple[str, ...] = get_args(Aggregate)
MODBUS_DRIVERS: tuple[str, ...] = ("modbus-tcp", "modbus-rtu", "modbus-rtu-over-tcp")
TCP_DRIVERS: tuple[str, ...] = ("modbus-tcp", "modbus-rtu-over-tcp")
SERIAL_DRIVERS: tuple[str, ...] = ("serial-line",)
DEFAULT_MODBUS_TCP_PORT = 502

# Registers a value of each type occupies (string: its `length`; bool: one register or bit).
TYPE_REGISTERS: dict[str, int] = {
    "int16": 1, "uint16": 1, "bool": 1, "float16": 1,
    "int8_high": 1, "int8_low": 1, "uint8_high": 1, "uint8_low": 1,
    "int32": 2, "uint32": 2, "float32": 2,
    "int64": 4, "uint64": 4, "float64": 4,
}

MAX_READ_REGISTERS = 125  # Modbus limit for function codes 3 and 4
MAX_READ_BITS = 2000  # Modbus limit for function codes 1 and 2
MAX_DEVICES = 10_000  # devices in one gateway config
MAX_PATTERN = 4096  # characters of a serial-line regular expression

NAME_PATTERN = r"[A-Za-z0-9_-]{1,64}"
NAME_HINT = "use 1-64 letters, digits, '_' or '-'"
POINT_PATTERN = r"[A-Za-z0-9_]{1,64}"
POINT_HINT = "use 1-64 letters, digits or '_'"
PROFILE_PATTERN = r"[A-Za-z0-9_.-]{1,64}"
PROFILE_HINT = "use 1-64 letters, digits, '_', '.' or '-'"
RATE_PATTERN = r"[1-9][0-9]{0,5}/(s|min|h)"
RATE_WINDOWS: dict[str, float] = {"s": 1.0, "min": 60.0, "h": 3600.0}


def rate_limit(text: str) -> tuple[int, float]:
    """``6/min`` -> (6, 60.0): writes allowed per window of seconds (RATE_PATTERN)."""
    count, _, unit = text.partition("/")
    return int(count), RATE_WINDOWS[unit]

# What each byte order means, in the words manuals and Modbus tools use.
BYTE_ORDER_NAMES: dict[str, str] = {
    "ABCD": "big endian", "CDAB": "word swap", "BADC": "byte swap", "DCBA": "little endian",
    "CDABGHEF": "64-bit words swapped per half", "EFGHABCD": "64-bit halves swapped",
    "DCBAHGFE": "64-bit halves little endian", "FEHGBADC": "64-bit halves and bytes swapped",
}
# Byte-order spellings accepted and normalised at load (case-insensitive; '_' and spaces
# read as '-'): Telegraf's normalizeByteOrder (word order MSW/LSW first, then the byte order
# within a word), the names of Modbus tools (Modbus Poll's "big-endian byte swap"), the
# swap words, and the digit notation (1234 = ABCD).
BYTE_ORDER_ALIASES: dict[str, str] = {
    "big": "ABCD", "big-endian": "ABCD", "be": "ABCD", "msw-be": "ABCD", "msw": "ABCD",
    "1234": "ABCD", "no-swap": "ABCD",
    "little": "DCBA", "little-endian": "DCBA", "le": "DCBA", "lsw-le": "DCBA", "lsw": "DCBA",
    "4321": "DCBA", "word-byte-swap": "DCBA", "byte-word-swap": "DCBA", "swap-all": "DCBA",
    "msw-le": "BADC", "big-swap": "BADC", "big-endian-byte-swap": "BADC", "2143": "BADC",
    "byte-swap": "BADC", "byteswap": "BADC", "byte-swapped": "BADC", "swap-bytes": "BADC",
    "abcdefgh": "ABCD", "hgfedcba": "DCBA", "badcfehg": "BADC", "ghefcdab": "CDAB",
    "lsw-be": "CDAB", "little-swap": "CDAB", "little-endian-byte-swap": "CDAB", "3412": "CDAB",
    "word-swap": "CDAB", "wordswap": "CDAB", "word-swapped": "CDAB", "swap-words": "CDAB",
}
BYTE_ORDER_DOC = ("ABCD (big endian) | CDAB (word swap) | BADC (byte swap) | DCBA (little "
                  "endian); aliases: big, little, word-swap, byte-swap, MSW-BE, MSW-LE, "
                  "LSW-BE, LSW-LE, 1234, 3412, 2143, 4321; 64-bit types also: CDABGHEF, "
                  "EFGHABCD, DCBAHGFE, FEHGBADC (bytes A..H as sent, docs/drivers.md)")


def byte_order_by_meaning(text: str) -> str | None:
    """The byte order a misspelt four-letter order most likely means, or None.

    Read as a technician writes it: the first letter says which word comes first (A or B:
    the high word, C or D: the low word, i.e. a word swap) and the first pair says whether
    the bytes of a word are swapped (BA or DC). So ``CDBA`` means the word swap ``CDAB``, not
    ``DCBA`` which only looks closer.
    """
    letters = text.strip().upper().translate(str.maketrans("1234", "ABCD"))
    if len(letters) != 4 or sorted(letters) != ["A", "B", "C", "D"]:
        return None
    words_swapped = letters[0] in "CD"
    bytes_swapped = letters[0] > letters[1]
    return {(False, False): "ABCD", (True, False): "CDAB", (False, True): "BADC",
            (True, True): "DCBA"}[(words_swapped, bytes_swapped)]


PARITY_ALIASES: dict[str, str] = {"none": "N", "even": "E", "odd": "O"}
TAGS_DOC = "tags added to every reading (string values); 'gateway' and 'device' are reserved"

# Report by exception (SPEC §8): declared once here, on a point and as a device default.
_DEADBAND_DOC = ("publish a value only when it moved more than this from the last value "
                 "published (engineering units; 0: on any change); numeric points only")
_DEADBAND_PCT_DOC = ("publish a value only when it moved more than this percentage of the last "
                     "value published; numeric points only; not with deadband")
_HEARTBEAT_DOC = ("publish at least this often even when unchanged (absent: only on change; "
                  "without a deadband: on any change and at least this often); also repeats "
                  "an unchanged bad quality")




@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS settings; presence enables TLS."""

    ca_file: str | None = field(
        default=None,
        metadata=spec(doc="CA certificate(s) to verify the broker (PEM); default: system CAs"),
    )
    cert_file: str | None = field(
        default=None, metadata=spec(doc="client certificate (PEM) for mutual TLS")
    )
    key_file: str | None = field(default=None, metadata=spec(doc="client private key (PEM)"))
    insecure: bool = field(
        default=False, metadata=spec(doc="skip hostname verification (test rigs only)")
    )


_TLS_DOC = "TLS settings; presence enables TLS"
_PORT_NOTE = "1883, or 8883 when tls is set"


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """An MQTT broker and how to log in: what the gateway's and the bridge's ``mqtt`` share."""

    host: str = field(metadata=spec(doc="broker host name or address", required=True))
    port: int = field(
        metadata=spec(
            doc="broker port", minimum=1, maximum=65535, computed=True, default_note=_PORT_NOTE
        )
    )
    client_id: str = field(
        metadata=spec(doc="MQTT client id", computed=True, default_note="sensegate-<gateway.id>")
    )
    username: str | None = field(default=None, metadata=spec(doc="user name"))
    password: Secret | None = field(default=None, metadata=spec(doc="password (use ${VAR})"))
    tls: TlsConfig | None = field(default=None, metadata=spec(doc=_TLS_DOC))
    qos: int = field(default=1, metadata=spec(doc="0, 1 or 2", minimum=0, maximum=2))
    keepalive: float = field(
        default=30.0, metadata=spec(kind="duration", doc="MQTT keepalive", positive=True)
    )


@dataclass(frozen=True, slots=True)
class MqttConfig(BrokerConfig):
    """The MQTT broker readings are published to."""

    topic_prefix: str = field(
        default="sensegate",
        metadata=spec(
            doc="first topic segment",
            pattern=r"[^#+\s]+",
            pattern_hint="no '#', '+' or spaces",
            noun="topic prefix",
        ),
    )
    format: PayloadFormat = field(
        default="json",
        metadata=spec(doc="payload format: json | influx (line protocol)", noun="a payload format"),
    )
    hosts: tuple[tuple[str, int], ...] = field(
        default=(),
        metadata=spec(
            item_kind="listen",
            max_items=16,
            doc="the other nodes of a clustered broker, HOST:PORT each: when host:port cannot "
            "be reached or its connection drops, the publisher moves on to the next node "
            "(same client id; what was not acknowledged is sent again)",
        ),
    )

    @property
    def nodes(self) -> tuple[tuple[str, int], ...]:
        """host:port, then the other nodes of `hosts`, each once: the order tried."""
        out = [(self.host, self.port)]
        out.extend(node for node in self.hosts if node not in out)
        return tuple(out)


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    """The offline buffer."""

    max_bytes: int = field(
        default=512 * 1024 * 1024,
        metadata=spec(
            kind="size",
            minimum=1024 * 1024,
            doc="past it the oldest messages are dropped, and counted",
        ),
    )
    max_message_bytes: int = field(
        default=256 * 1024,
        metadata=spec(
            kind="size",
            minimum=1024,
            doc="several scans of one device share a message up to this size",
        ),
    )
    commit_interval: float = field(
        default=0.2,
        metadata=spec(
            kind="duration",
            positive=True,
            doc="readings are committed in batches at most this far apart",
        ),
    )


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus metrics on /metrics and /healthz."""

    listen: tuple[str, int] = field(
        default=("127.0.0.1", 9108), metadata=spec(kind="listen", doc="HOST:PORT to listen on")
    )

    @property
    def host(self) -> str:
        return self.listen[0]

    @property
    def port(self) -> int:
        return self.listen[1]


_METRICS_DOC = "Prometheus metrics on /metrics and /healthz; absent: no metrics server"


@dataclass(frozen=True, slots=True)
class HttpConfig(MetricsConfig):
    """The gateway's HTTP listener (SPEC §9): the technician's page, /metrics, /healthz."""

    token: Secret | None = field(
        default=None,
        metadata=spec(doc="required by the page and /metrics: open /?token=TOKEN once in the "
                      "browser, or send 'Authorization: Bearer TOKEN'; /healthz stays open "
                      "(use ${VAR})"),
    )


_HTTP_DOC = ("the HTTP listener: the technician's page at /, Prometheus metrics on /metrics, "
             "/healthz (docs/page.md); absent: no listener")


@dataclass(frozen=True, slots=True)
class SerialSettings:
    """Line settings of an RS-485 bus or a serial-line sensor port."""

    port: str = field(metadata=spec(doc="serial device, e.g. /dev/ttyUSB0", required=True))
    baudrate: int = field(default=9600, metadata=spec(doc="bits per second", positive=True))
    parity: Parity = field(
        default="N", metadata=spec(doc="N | E | O", aliases=PARITY_ALIASES, noun="a parity")
    )
    stopbits: int = field(default=1, metadata=spec(doc="1 or 2", minimum=1, maximum=2))
    bytesize: int = field(default=8, metadata=spec(doc="data bits, 5-8", minimum=5, maximum=8))


@dataclass(frozen=True, slots=True)
class BusConfig:
    """An RS-485 line shared by Modbus RTU devices."""

    name: str = field(
        metadata=spec(
            doc="bus name, referenced by devices' `bus`",
            required=True,
            pattern=NAME_PATTERN,
            pattern_hint=NAME_HINT,
            noun="bus name",
        )
    )
    serial: SerialSettings = field(metadata=spec(inline=True))
    frame_gap: float = field(
        default=0.0,
        metadata=spec(
            kind="duration", doc="extra silence between transactions, for devices that need it"
        ),
    )
    framing: Literal["rtu", "ascii"] = field(
        default="rtu",
        metadata=spec(doc="rtu | ascii (Modbus ASCII: hex text with an LRC, for older "
                      "devices and radio modems that only speak it)", noun="a framing"),
    )
    turnaround: float = field(
        default=0.01,
        metadata=spec(
            kind="duration",
            doc="allowance for a device's reply latency, used by the bus time estimate",
        ),
    )


@dataclass(frozen=True, slots=True)
class PointConfig:
    """One value read from the device."""

    name: str = field(
        metadata=spec(
            doc="unique within the device; the field name in InfluxDB",
            required=True,
            pattern=POINT_PATTERN,
            pattern_hint=POINT_HINT,
            noun="point name",
        )
    )
    type: DataType = field(
        default="float64",
        metadata=spec(
            doc="data type",
            noun="a data type",
            computed=True,
            default_note="uint16 for registers, bool for coils and "
            "discretes, float64 for serial-line points",
        ),
    )
    table: Table | None = field(  # None for serial-line points
        default=None,
        metadata=spec(
            applies_to=MODBUS_DRIVERS,
            doc="Modbus table: holding | input | coil | discrete",
            noun="a table",
        ),
    )
    address: int | None = field(  # None for serial-line points
        default=None,
        metadata=spec(
            applies_to=MODBUS_DRIVERS, minimum=0, maximum=465536,
            doc="0-based protocol address 0..65535 (or as the device's `addressing` says: "
            "register numbers 1..65536, Modicon numbers up to 465536)",
        ),
    )
    byte_order: ByteOrder = field(
        default="ABCD",
        metadata=spec(
            applies_to=MODBUS_DRIVERS,
            doc=BYTE_ORDER_DOC,
            aliases=BYTE_ORDER_ALIASES,
            suggest=byte_order_by_meaning,
            choice_names=BYTE_ORDER_NAMES,
            noun="a byte order",
            computed=True,
            default_note="the device's byte_order, else ABCD",
        ),
    )
    scale: float = field(default=1.0, metadata=spec(doc="value = raw * scale + offset"))
    offset: float = field(default=0.0, metadata=spec(doc="value = raw * scale + offset"))
    precision: int | None = field(
        default=None,
        metadata=spec(
            doc="decimals a scaled value is rounded to (default: as many as scale and offset "
            "imply for integer raw values, so raw 474 x 0.1 is 47.4; float raw values are not "
            "rounded unless precision is set)",
            minimum=0,
            maximum=15,
        ),
    )
    output: Output = field(
        default="auto",
        metadata=spec(
            doc="number type a numeric value is published as: auto (an integer type with a "
            "whole scale and offset stays an integer, anything else is a float) | float "
            "(always a float: keeps an InfluxDB field that already holds floats)",
            noun="an output type",
        ),
    )
    scale_factor: str | None = field(
        default=None,
        metadata=spec(
            applies_to=MODBUS_DRIVERS,
            doc="name of an integer point of the same device, read with this one, that holds "
            "a power of ten (SunSpec's sunssf): value = (raw * scale + offset) * "
            "10^(that point's value), published as a float; quality as that point's when it "
            "is not good, invalid when it is outside -10..10",
            pattern=POINT_PATTERN,
            pattern_hint=POINT_HINT,
            noun="point name",
        ),
    )
    unit: str | None = field(
        default=None, metadata=spec(doc="unit of measure, informational (e.g. degC)")
    )
    bit: int | None = field(
        default=None,
        metadata=spec(
            applies_to=MODBUS_DRIVERS,
            doc="read one bit (0 = least significant) of a "
            "holding/input register; type must be bool",
            minimum=0,
            maximum=15,
        ),
    )
    length: int | None = field(
        default=None,
        metadata=spec(
            applies_to=MODBUS_DRIVERS,
            doc="registers a string occupies (two characters each)",
            minimum=1,
            maximum=MAX_READ_REGISTERS,
        ),
    )
    encoding: str = field(
        default="utf-8",
        metadata=spec(
            applies_to=MODBUS_DRIVERS,
            doc="text encoding of a string point (any Python codec: utf-8, ascii, latin-1, "
            "cp1252, ...); the text is cut at the first NUL and stripped of spaces; bytes it "
            "cannot decode give quality invalid",
        ),
    )
    interval: float | None = field(
        default=None,
        metadata=spec(
            kind="duration",
            positive=True,
            applies_to=MODBUS_DRIVERS,
            doc="this point's own poll interval; points sharing one are read together",
            computed=True,
            default_note="the device's interval",
        ),
    )
    deadband: float | None = field(
        default=None,
        metadata=spec(doc=_DEADBAND_DOC, minimum=0, computed=True,
                      default_note="the device's deadband"),
    )
    deadband_pct: float | None = field(
        default=None,
        metadata=spec(doc=_DEADBAND_PCT_DOC, minimum=0, computed=True,
                      default_note="the device's deadband_pct"),
    )
    heartbeat: float | None = field(
        default=None,
        metadata=spec(kind="duration", positive=True, doc=_HEARTBEAT_DOC, computed=True,
                      default_note="the device's heartbeat"),
    )
    writable: bool = field(
        default=False,
        metadata=spec(
            applies_to=MODBUS_DRIVERS,
            doc="commands may write this point (SPEC §6; holding and coil points only); "
            "points not marked writable are never written",
        ),
    )
    min: float | None = field(
        default=None,
        metadata=spec(applies_to=MODBUS_DRIVERS,
                      doc="smallest value a command may write (engineering units); "
                      "writable numeric points only"),
    )
    max: float | None = field(
        default=None,
        metadata=spec(applies_to=MODBUS_DRIVERS,
                      doc="largest value a command may write (engineering units); "
                      "writable numeric points only"),
    )
    allowed: tuple[int | float, ...] = field(
        default=(),
        metadata=spec(
            item_kind="number",
            applies_to=MODBUS_DRIVERS,
            doc="the only values a command may write (engineering units), e.g. [0, 1, 2]; "
            "writable points only",
        ),
    )
    max_rate: str | None = field(
        default=None,
        metadata=spec(
            applies_to=MODBUS_DRIVERS,
            pattern=RATE_PATTERN,
            pattern_hint="write N/s, N/min or N/h, e.g. 6/min",
            noun="rate",
            doc="most writes of this point a window may hold, e.g. 6/min (spares a device's "
            "EEPROM); writable points only",
        ),
    )
    invalid_values: tuple[int | float, ...] = field(
        default=(),
        metadata=spec(
            item_kind="number",
            doc='raw values (before scale and offset) that mean "no reading", e.g. [32767] on '
            "an int16 or [65535] on a uint16 register: the point gets quality invalid instead of "
            "a value; numeric points only, each value within the point's type",
        ),
    )

    @property
    def register_count(self) -> int:
        """Registers (or bits, for coils and discretes) this point occupies."""
        if self.table in BIT_TABLES:
            return 1
        if self.type == "string":
            return self.length or 1
        return TYPE_REGISTERS[self.type]


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """One sensor or meter."""

    SELECTOR: ClassVar[str] = "driver"

    name: str = field(
        metadata=spec(
            doc="unique device name; topic segment and tag; 'config' is reserved (the "
                "remote configuration topic)",
            required=True,
            pattern=NAME_PATTERN,
            pattern_hint=NAME_HINT,
            noun="device name",
        )
    )
    driver: Driver = field(
        metadata=spec(doc="how the device is read", required=True, noun="a driver")
    )
    points: tuple[PointConfig, ...] = field(
        metadata=spec(
            doc="the values to read (with a profile: added "
            "to or replacing the profile's points of the "
            "same name)"
        )
    )
    interval: float = field(
        default=1.0, metadata=spec(kind="duration", doc="time between scans", positive=True)
    )
    timeout: float = field(
        default=1.0, metadata=spec(kind="duration", doc="time to wait for an answer", positive=True)
    )
    retries: int = field(
        default=1,
        metadata=spec(doc="extra attempts of a failed request in one scan", minimum=0, maximum=10),
    )
    measurement: str = field(
        default="",
        metadata=spec(doc="InfluxDB measurement", computed=True, default_note="the device name"),
    )
    tags: dict[str, str] = field(default_factory=dict, metadata=spec(doc=TAGS_DOC))
    unit: int = field(
        default=1,
        metadata=spec(
            doc="Modbus unit / slave id: 1-247 on serial lines, 0-255 on TCP",
            minimum=0,
            maximum=255,
            applies_to=MODBUS_DRIVERS,
        ),
    )
    host: str | None = field(
        default=None,
        metadata=spec(
            doc="address of the Modbus TCP server or serial gateway",
            applies_to=TCP_DRIVERS,
            required_for=TCP_DRIVERS,
        ),
    )
    # TCP port; the serial device of serial-line is in `serial`
    port: int | None = field(
        default=None,
        metadata=spec(
            kind="port",
            doc="TCP port (modbus-tcp, modbus-rtu-over-tcp) or serial device (serial-line)",
            applies_to=(*TCP_DRIVERS, *SERIAL_DRIVERS),
            required_for=SERIAL_DRIVERS,
            computed=True,
            default_note=f"{DEFAULT_MODBUS_TCP_PORT} for TCP drivers",
        ),
    )
    bus: str | None = field(
        default=None,
        metadata=spec(
            doc="name of the RS-485 bus (modbus-rtu)",
            applies_to=("modbus-rtu",),
            required_for=("modbus-rtu",),
        ),
    )
    serial: SerialSettings | None = field(
        default=None, metadata=spec(inline=True, applies_to=SERIAL_DRIVERS)
    )
    request: bytes | None = field(
        default=None,
        metadata=spec(
            applies_to=SERIAL_DRIVERS,
            doc="sent every interval; absent: the sensor streams. C-style escapes are read "
            "whatever the YAML quoting: `\\r`, `\\n`, `\\t`, `\\xHH` (one byte), `\\\\` (a "
            "backslash), so `'R\\r\\n'`, `R\\r\\n` and `\"R\\r\\n\"` all send R, CR, LF; other "
            "characters are sent as UTF-8",
        ),
    )
    pattern: str | None = field(
        default=None,
        metadata=spec(
            kind="regex",
            applies_to=SERIAL_DRIVERS,
            max_length=MAX_PATTERN,
            doc="regular expression with one named group per point",
        ),
    )
    max_gap: int = field(
        default=10,
        metadata=spec(
            doc="unused registers a request may bridge (0: never read an unnamed address)",
            minimum=0,
            maximum=MAX_READ_BITS,
            applies_to=MODBUS_DRIVERS,
        ),
    )
    max_registers: int = field(
        default=MAX_READ_REGISTERS,
        metadata=spec(
            doc="largest request the device accepts, in registers",
            minimum=1,
            maximum=MAX_READ_REGISTERS,
            applies_to=MODBUS_DRIVERS,
        ),
    )
    # Device quirks (docs/drivers.md, "Device quirks": which device behaviour each one fixes)
    pause: float = field(
        default=0.0,
        metadata=spec(
            kind="duration",
            applies_to=MODBUS_DRIVERS,
            doc="quirk: wait this long between two requests to this device (slow devices that "
            "miss a request sent right after their last answer); the bus is free meanwhile",
        ),
    )
    pause_after_connect: float = field(
        default=0.0,
        metadata=spec(
            kind="duration",
            applies_to=MODBUS_DRIVERS,
            doc="quirk: wait this long after the connection opens before the first request "
            "(devices that drop or ignore a request sent at once after connect)",
        ),
    )
    one_request_per_point: bool = field(
        default=False,
        metadata=spec(
            applies_to=MODBUS_DRIVERS,
            doc="quirk: never read two values in one request (devices that refuse or garble "
            "requests spanning several values); points sharing registers still share one",
        ),
    )
    close_after_scan: bool = field(
        default=False,
        metadata=spec(
            applies_to=MODBUS_DRIVERS,
            doc="quirk: close the connection after every scan (devices that accept one client "
            "at a time, or hang on an idle connection)",
        ),
    )
    turnaround_delay: float = field(
        default=0.0,
        metadata=spec(
            kind="duration",
            applies_to=MODBUS_DRIVERS,
            doc="quirk: keep the line silent this long after each transaction with this "
            "device, before any device is sent a request (RS-485 transceivers slow to "
            "release the line); the bus's frame_gap applies to every device",
        ),
    )
    retry_exceptions: tuple[int, ...] = field(
        default=(),
        metadata=spec(
            item_kind="int",
            applies_to=MODBUS_DRIVERS,
            doc="quirk: Modbus exception codes retried like a timeout (up to `retries` times, "
            "after `retry_wait`), e.g. [6] for server busy, [5, 6] for acknowledge and busy",
        ),
    )
    retry_wait: float = field(
        default=0.1,
        metadata=spec(
            kind="duration",
            applies_to=MODBUS_DRIVERS,
            doc="wait before retrying a request answered with one of `retry_exceptions`",
        ),
    )
    addressing: Addressing = field(
        default="protocol",
        metadata=spec(
            applies_to=MODBUS_DRIVERS,
            noun="an addressing",
            doc="how point addresses are written: protocol (0-based, as sent) | one-based "
            "(register number 1 is address 0) | modicon (40001-style: 40001 is holding "
            "address 0, 30001 input, 10001 discrete, 00001 coil; six digits 400001 up to "
            "465536; the table follows from the number)",
        ),
    )
    profile: str | None = field(
        default=None,
        metadata=spec(
            doc="a register map for one sensor model "
            "(PROFILE.yaml, searched in gateway.profile_dirs, "
            "<config dir>/profiles, the shipped profiles)",
            pattern=PROFILE_PATTERN,
            pattern_hint=PROFILE_HINT,
            noun="profile name",
        ),
    )
    deadband: float | None = field(
        default=None, metadata=spec(doc="default deadband of this device's points: "
                                        + _DEADBAND_DOC, minimum=0)
    )
    deadband_pct: float | None = field(
        default=None, metadata=spec(doc="default deadband_pct of this device's points: "
                                        + _DEADBAND_PCT_DOC, minimum=0)
    )
    heartbeat: float | None = field(
        default=None, metadata=spec(kind="duration", positive=True,
                                    doc="default heartbeat of this device's points: "
                                        + _HEARTBEAT_DOC)
    )
    publish_interval: float | None = field(
        default=None,
        metadata=spec(
            kind="duration",
            positive=True,
            doc="poll at `interval` but publish once per window of this length (aligned to "
            "the wall clock), as the `aggregate` fields; needs `aggregate`",
        ),
    )
    aggregate: tuple[Aggregate, ...] = field(
        default=(),
        metadata=spec(
            doc="with publish_interval: the fields each numeric point publishes per window, "
            "as <point>_min, <point>_max, <point>_mean, <point>_last, <point>_count (bool and "
            "string points: last and count only)",
            noun="an aggregate",
        ),
    )
    write_multiple: bool = field(
        default=False,
        metadata=spec(
            applies_to=MODBUS_DRIVERS,
            doc="write with function codes 15/16 only, also for one coil or register (for "
            "devices that refuse 5 or 6)",
        ),
    )
    byte_order: ByteOrder | None = field(
        default=None,
        metadata=spec(
            doc="default byte order of this device's points",
            aliases=BYTE_ORDER_ALIASES,
            suggest=byte_order_by_meaning,
            choice_names=BYTE_ORDER_NAMES,
            noun="a byte order",
            applies_to=MODBUS_DRIVERS,
        ),
    )


@dataclass(frozen=True, slots=True)
class ProfileInfo:
    """What a device profile says about its sensor model (<profile dir>/<name>.yaml)."""

    model: str = field(metadata=spec(doc="sensor model", required=True))
    description: str | None = field(default=None, metadata=spec(doc="what the sensor measures"))
    manufacturer: str | None = field(default=None, metadata=spec(doc="maker of the sensor"))


@dataclass(frozen=True, slots=True)
class CommandsConfig:
    """Commands from the operations centre: Modbus writes (SPEC §6, docs/commands.md)."""

    enabled: bool = field(
        default=False,
        metadata=spec(doc="subscribe to {prefix}/{gateway.id}/+/set and execute commands"),
    )
    public_key: str | None = field(
        default=None,
        metadata=spec(doc="the centre's Ed25519 public key: a file (base64 line or PEM; "
                      "relative to the config's directory) or the base64 line itself; when "
                      "set, unsigned or badly signed commands are refused"),
    )
    max_age: float = field(
        default=30.0,
        metadata=spec(kind="duration", positive=True,
                      doc="a command whose ts is older (or further in the future) is refused"),
    )
    key: bytes | None = None  # public_key read and parsed by the loader: 32 raw bytes


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """Signed remote configuration from the operations centre (SPEC §7, docs/fleet.md)."""

    public_key: str | None = field(
        default=None,
        metadata=spec(doc="Ed25519 public key of the operations centre: the base64 line of "
                      "KEY.pub (sensegate fleet keygen), or the path of a file holding it "
                      "or a PEM key; absent: remote configuration is off"),
    )
    probation: float = field(
        default=120.0,
        metadata=spec(kind="duration", positive=True,
                      doc="a pushed config that loses the broker or fails more devices "
                      "within this time is rolled back"),
    )
    max_age: float = field(
        default=300.0,
        metadata=spec(kind="duration", positive=True,
                      doc="a config message signed longer ago (or further ahead) than this "
                      "is refused"),
    )
    keep: int = field(
        default=5,
        metadata=spec(minimum=1, maximum=100, doc="configs kept under state_dir/fleet/configs"),
    )
    key: bytes | None = None  # public_key read and parsed by the loader: 32 raw bytes

    @property
    def enabled(self) -> bool:
        return self.key is not None


_FLEET_DOC = ("signed remote configuration from the operations centre; off unless "
              "public_key is set")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Sensegate gateway config."""

    SECTIONS: ClassVar[dict[str, str]] = {"gateway": "this gateway"}

    id: str = field(
        metadata=spec(
            doc="gateway id; topic segment and tag",
            required=True,
            section="gateway",
            pattern=NAME_PATTERN,
            pattern_hint=NAME_HINT,
            noun="gateway id",
        )
    )
    mqtt: MqttConfig = field(
        metadata=spec(doc="the MQTT broker readings are published to", required=True)
    )
    devices: tuple[DeviceConfig, ...] = field(
        metadata=spec(doc="the sensors to poll", required=True, max_items=MAX_DEVICES)
    )
    buses: tuple[BusConfig, ...] = field(
        default=(), metadata=spec(doc="RS-485 lines shared by Modbus RTU devices")
    )
    tags: dict[str, str] = field(
        default_factory=dict, metadata=spec(doc=TAGS_DOC, section="gateway")
    )
    state_dir: str = field(
        default="/var/lib/sensegate",
        metadata=spec(doc="the offline buffer lives here", section="gateway"),
    )
    outbox: OutboxConfig = field(
        default_factory=OutboxConfig, metadata=spec(doc="the offline buffer")
    )
    http: HttpConfig | None = field(default=None, metadata=spec(doc=_HTTP_DOC))
    metrics: MetricsConfig | None = field(
        default=None,
        metadata=spec(doc="the old name of 'http:' (listen only, no token); not both"),
    )
    commands: CommandsConfig | None = field(
        default=None,
        metadata=spec(doc="commands from the centre (Modbus writes); absent: off"),
    )
    source: str = ""  # path of the file this was loaded from
    profile_dirs: tuple[str, ...] = field(
        default=(),
        metadata=spec(doc="directories searched first for device profiles", section="gateway"),
    )
    status_interval: float = field(
        default=60.0,
        metadata=spec(kind="duration", minimum=1.0, section="gateway",
                      doc="the retained health record on {prefix}/{id}/status is refreshed "
                      "this often (and at once on a change)"),
    )
    fleet: FleetConfig = field(default_factory=FleetConfig, metadata=spec(doc=_FLEET_DOC))

    def bus(self, name: str) -> BusConfig:
        return next(b for b in self.buses if b.name == name)

    def device(self, name: str) -> DeviceConfig:
        return next(d for d in self.devices if d.name == name)

    @property
    def listener(self) -> MetricsConfig | None:
        """The HTTP listener: ``http:``, or ``metrics:``, its old name."""
        return self.http if self.http is not None else self.metrics


@dataclass(frozen=True, slots=True)
class BridgeMqttConfig(BrokerConfig):
    """The broker the gateways publish to."""

    # fixed, so the broker keeps the persistent session
    client_id: str = field(
        default="sensegate-bridge",
        metadata=spec(doc="fixed client id, so the broker keeps the session"),
    )
    subscribe: str = field(
        default="sensegate/+/+/data", metadata=spec(doc="topic filter of the data messages")
    )
    shared_group: str | None = field(
        default=None,
        metadata=spec(
            doc="MQTT shared subscription group: bridges in one group share the load",
            pattern=r"[^#+/\s]+",
            pattern_hint="no '#', '+', '/' or spaces",
            noun="group name",
        ),
    )
    session_expiry: float = field(
        default=7 * 24 * 3600.0,
        metadata=spec(
            kind="duration",
            positive=True,
            doc="how long the broker keeps the queue while the bridge is away",
        ),
    )
    receive_maximum: int = field(
        default=10000,
        metadata=spec(
            minimum=1,
            maximum=65535,
            doc="unacknowledged messages the broker may send at once (MQTT v5)",
        ),
    )


@dataclass(frozen=True, slots=True)
class InfluxConfig:
    """Where readings are written."""

    SELECTOR: ClassVar[str] = "api"

    url: str = field(
        metadata=spec(
            doc="e.g. http://127.0.0.1:8086",
            required=True,
            pattern=r"https?://\S+",
            pattern_hint="write http://HOST:PORT",
            noun="url",
        )
    )
    api: InfluxApi = field(
        default="v2",
        metadata=spec(
            doc="v2 (InfluxDB 2.x, 3.x, 1.8+) | v1 (/write, InfluxDB 1.x)", noun="an InfluxDB API"
        ),
    )
    org: str | None = field(
        default=None, metadata=spec(doc="organisation", applies_to=("v2",), required_for=("v2",))
    )
    bucket: str | None = field(
        default=None, metadata=spec(doc="bucket", applies_to=("v2",), required_for=("v2",))
    )
    token: Secret | None = field(
        default=None, metadata=spec(doc="API token (use ${VAR})", applies_to=("v2",))
    )
    database: str | None = field(
        default=None, metadata=spec(doc="database", applies_to=("v1",), required_for=("v1",))
    )
    retention_policy: str | None = field(
        default=None, metadata=spec(doc="retention policy", applies_to=("v1",))
    )
    create_database: bool = field(
        default=True,
        metadata=spec(
            doc="create the database when /write says it is missing", applies_to=("v1",)
        ),
    )
    username: str | None = field(default=None, metadata=spec(doc="user name (v1)"))
    password: Secret | None = field(default=None, metadata=spec(doc="password (v1; use ${VAR})"))
    batch_size: int = field(
        default=5000, metadata=spec(doc="points per write", minimum=1, maximum=1_000_000)
    )
    flush_interval: float = field(
        default=1.0,
        metadata=spec(
            kind="duration", positive=True, doc="longest wait before a partial batch is written"
        ),
    )
    timeout: float = field(
        default=10.0, metadata=spec(kind="duration", doc="HTTP timeout of one write", positive=True)
    )


DEFAULT_AMQP_PORT = 5672


@dataclass(frozen=True, slots=True)
class AmqpConfig:
    """A RabbitMQ cluster's durable queue, consumed over AMQP 0-9-1."""

    nodes: tuple[tuple[str, int], ...] = field(
        metadata=spec(
            item_kind="listen",
            max_items=16,
            required=True,
            doc="the cluster's nodes, HOST:PORT each (AMQP port, usually 5672): the bridge "
            "connects to the first that answers and moves on when its node is lost",
        )
    )
    username: str = field(default="guest", metadata=spec(doc="user name"))
    password: Secret | None = field(
        default=None, metadata=spec(doc="password (use ${VAR}); absent: guest's")
    )
    tls: TlsConfig | None = field(
        default=None,
        metadata=spec(doc="TLS settings; presence enables TLS (AMQPS: the nodes' TLS ports, "
                      "usually 5671)"),
    )
    vhost: str = field(default="/", metadata=spec(doc="virtual host"))
    queue: str = field(
        default="sensegate",
        metadata=spec(doc="the durable quorum queue, declared at start (shared by all bridges)"),
    )
    exchange: str = field(
        default="amq.topic",
        metadata=spec(doc="the exchange RabbitMQ's MQTT plugin publishes to"),
    )
    binding: str = field(
        default="sensegate.*.*.data",
        metadata=spec(
            doc="binding key of the queue: the data topic with '.' for '/' (RabbitMQ's MQTT "
            "mapping); the prefix must follow mqtt.topic_prefix"
        ),
    )
    prefetch: int = field(
        default=5000,
        metadata=spec(
            minimum=1,
            maximum=65535,
            doc="unacknowledged deliveries at once: bounds the bridge's memory",
        ),
    )
    replicas: int | None = field(
        default=None,
        metadata=spec(
            minimum=1,
            maximum=99,
            doc="replicas of a new queue (x-quorum-initial-group-size); default: every node",
        ),
    )
    heartbeat: float = field(
        default=30.0,
        metadata=spec(kind="duration", positive=True, doc="AMQP heartbeat"),
    )


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    """Sensegate bridge config (MQTT or AMQP to InfluxDB)."""

    influxdb: InfluxConfig = field(metadata=spec(doc="where readings are written", required=True))
    mqtt: BridgeMqttConfig | None = field(
        default=None,
        metadata=spec(doc="the broker the gateways publish to (one of mqtt and amqp)"),
    )
    amqp: AmqpConfig | None = field(
        default=None,
        metadata=spec(
            doc="consume a RabbitMQ cluster's quorum queue instead of subscribing over MQTT "
            "(one of mqtt and amqp)"
        ),
    )
    state_dir: str = field(
        default="/var/lib/sensegate-bridge",
        metadata=spec(doc="dead letters and bridge state live here"),
    )
    metrics: MetricsConfig | None = field(
        default=None, metadata=spec(doc=_METRICS_DOC, defaults={"listen": ("127.0.0.1", 9109)})
    )
    source: str = ""


Value = float | int | bool | str


@dataclass(slots=True)
class Reading:
    """One scan of one device: what the gateway buffers and publishes.

    ``values`` holds only good points; ``quality`` only the points that are not good.
    """

    device: str
    ts: int  # integer nanoseconds since the Unix epoch (UTC) at which the scan was read
    values: dict[str, Value] = field(default_factory=dict)
    quality: dict[str, str] = field(default_factory=dict)
