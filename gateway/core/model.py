"""Typed, validated configuration and reading objects shared by every module.

`gateway.config.load` builds these from YAML (after validation, with defaults applied);
everything else only ever sees these objects, never raw YAML. Durations are float
seconds, sizes are int bytes. The objects are frozen: a SIGHUP reload builds new ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Table = Literal["holding", "input", "coil", "discrete"]
DataType = Literal[
    "int16", "uint16", "int32", "uint32", "int64", "uint64",
    "float32", "float64", "bool", "string",
]
ByteOrder = Literal["ABCD", "DCBA", "BADC", "CDAB"]
Driver = Literal["modbus-tcp", "modbus-rtu", "modbus-rtu-over-tcp", "serial-line"]
Quality = Literal["good", "bad", "invalid"]
PayloadFormat = Literal["json", "influx"]

TABLES: tuple[str, ...] = ("holding", "input", "coil", "discrete")
BIT_TABLES: tuple[str, ...] = ("coil", "discrete")
DATA_TYPES: tuple[str, ...] = (
    "int16", "uint16", "int32", "uint32", "int64", "uint64",
    "float32", "float64", "bool", "string",
)
BYTE_ORDERS: tuple[str, ...] = ("ABCD", "DCBA", "BADC", "CDAB")
DRIVERS: tuple[str, ...] = ("modbus-tcp", "modbus-rtu", "modbus-rtu-over-tcp", "serial-line")
MODBUS_DRIVERS: tuple[str, ...] = ("modbus-tcp", "modbus-rtu", "modbus-rtu-over-tcp")

# Registers a value of each type occupies (string: its `length`; bool: one register or bit).
TYPE_REGISTERS: dict[str, int] = {
    "int16": 1, "uint16": 1, "bool": 1,
    "int32": 2, "uint32": 2, "float32": 2,
    "int64": 4, "uint64": 4, "float64": 4,
}

MAX_READ_REGISTERS = 125  # Modbus limit for function codes 3 and 4
MAX_READ_BITS = 2000  # Modbus limit for function codes 1 and 2


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


@dataclass(frozen=True, slots=True)
class TlsConfig:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False  # skip hostname verification (test rigs only)


@dataclass(frozen=True, slots=True)
class MqttConfig:
    host: str
    port: int  # default 1883, or 8883 when tls is set
    client_id: str
    username: str | None = None
    password: Secret | None = None
    tls: TlsConfig | None = None
    qos: int = 1
    topic_prefix: str = "sensegate"
    format: PayloadFormat = "json"
    keepalive: float = 30.0


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    max_bytes: int = 512 * 1024 * 1024
    max_message_bytes: int = 256 * 1024  # several scans of one device share a message up to this
    commit_interval: float = 0.2  # readings are committed in batches at most this far apart


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    host: str = "127.0.0.1"
    port: int = 9108


@dataclass(frozen=True, slots=True)
class SerialSettings:
    """Line settings of an RS-485 bus or a serial-line sensor port."""

    port: str
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1
    bytesize: int = 8


@dataclass(frozen=True, slots=True)
class BusConfig:
    name: str
    serial: SerialSettings
    frame_gap: float = 0.0  # extra silence between transactions, for devices that need it
    turnaround: float = 0.01  # allowance for a device's reply latency, used by the bus estimate


@dataclass(frozen=True, slots=True)
class PointConfig:
    name: str
    type: DataType = "float64"
    table: Table | None = None  # None for serial-line points
    address: int | None = None  # 0-based protocol address; None for serial-line points
    byte_order: ByteOrder = "ABCD"
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    bit: int | None = None  # read one bit (0 = LSB) of a 16-bit register
    length: int | None = None  # registers a string occupies
    # raw values (before scale/offset) that mean "no reading": quality invalid
    invalid_values: tuple[int | float, ...] = ()

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
    name: str
    driver: Driver
    points: tuple[PointConfig, ...]
    interval: float = 1.0
    timeout: float = 1.0
    retries: int = 1
    measurement: str = ""  # filled with the device name by the loader when absent
    tags: dict[str, str] = field(default_factory=dict)
    unit: int = 1
    host: str | None = None  # modbus-tcp, modbus-rtu-over-tcp
    port: int | None = None  # TCP port for modbus-tcp (default 502), modbus-rtu-over-tcp
    bus: str | None = None  # modbus-rtu: name of a BusConfig
    serial: SerialSettings | None = None  # serial-line: the sensor's own port
    request: bytes | None = None  # serial-line: sent every interval; None = the sensor streams
    pattern: str | None = None  # serial-line: regex with named groups = point names
    max_gap: int = 10
    max_registers: int = MAX_READ_REGISTERS
    profile: str | None = None


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """Signed remote configuration (SPEC §7); off while ``public_key`` is None."""

    public_key: bytes | None = None  # Ed25519, 32 raw bytes
    probation: float = 120.0  # seconds a pushed config must prove itself
    max_age: float = 300.0  # a config/set older (or further in the future) is refused
    keep: int = 5  # configs kept under state_dir/fleet/configs

    @property
    def enabled(self) -> bool:
        return self.public_key is not None


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    id: str
    mqtt: MqttConfig
    devices: tuple[DeviceConfig, ...]
    buses: tuple[BusConfig, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    state_dir: str = "/var/lib/sensegate"
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    metrics: MetricsConfig | None = None
    source: str = ""  # path of the file this was loaded from
    status_interval: float = 60.0  # the retained health record is refreshed this often
    fleet: FleetConfig = field(default_factory=FleetConfig)

    def bus(self, name: str) -> BusConfig:
        return next(b for b in self.buses if b.name == name)

    def device(self, name: str) -> DeviceConfig:
        return next(d for d in self.devices if d.name == name)


@dataclass(frozen=True, slots=True)
class BridgeMqttConfig:
    host: str
    port: int
    client_id: str  # fixed, so the broker keeps the persistent session
    subscribe: str = "sensegate/+/+/data"
    shared_group: str | None = None
    username: str | None = None
    password: Secret | None = None
    tls: TlsConfig | None = None
    qos: int = 1
    keepalive: float = 30.0
    session_expiry: float = 7 * 24 * 3600.0  # how long the broker keeps our queue while away
    receive_maximum: int = 10000  # unacknowledged messages the broker may send us at once (v5)


@dataclass(frozen=True, slots=True)
class InfluxConfig:
    url: str
    api: Literal["v1", "v2"] = "v2"
    org: str | None = None  # v2
    bucket: str | None = None  # v2
    token: Secret | None = None  # v2
    database: str | None = None  # v1
    retention_policy: str | None = None  # v1
    username: str | None = None  # v1
    password: Secret | None = None  # v1
    create_database: bool = True  # v1: create the database when /write says it is missing
    batch_size: int = 5000
    flush_interval: float = 1.0
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    mqtt: BridgeMqttConfig
    influxdb: InfluxConfig
    state_dir: str = "/var/lib/sensegate-bridge"
    metrics: MetricsConfig | None = None
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
