"""`sensegate scan`, the pure part: which line settings and unit ids to try, in what order,
how long that may take, and the config stub printed for what answered.

Line settings are tried most common first (`LINE_SETTINGS`): 9600 8N1 (the factory setting
of most meters and sensors), 19200 8E1 (the Modbus over serial line specification's
default, section 2.5.1), then the other common speeds with no, even and odd parity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LINE_SETTINGS: tuple[tuple[int, str], ...] = (
    (9600, "N"), (19200, "E"), (9600, "E"), (19200, "N"), (38400, "N"), (115200, "N"),
    (4800, "N"), (38400, "E"), (57600, "N"), (115200, "E"), (2400, "N"), (4800, "E"),
    (57600, "E"), (1200, "N"), (9600, "O"), (19200, "O"), (38400, "O"), (115200, "O"),
    (4800, "O"), (57600, "O"), (2400, "E"), (2400, "O"), (1200, "E"), (1200, "O"),
)
RTU_UNITS = range(1, 248)
PROBE_BYTES = 8 + 7  # a read of one register and its answer, in RTU frames


def parse_units(text: str) -> list[int]:
    """``1-20``, ``1,2,5-7``, ``255`` -> the unit ids, sorted, each once; ``ValueError``
    for anything outside 0..255 or not a number."""
    units: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, dash, high = part.partition("-")
        try:
            first = int(low)
            last = int(high) if dash else first
        except ValueError:
            raise ValueError(f"{part!r} is not a unit id or a range like 1-20") from None
        if not (0 <= first <= 255 and 0 <= last <= 255) or first > last:
            raise ValueError(f"{part!r} is not within unit ids 0..255")
        units.update(range(first, last + 1))
    if not units:
        raise ValueError("no unit ids given")
    return sorted(units)


def probe_time(baud: int, timeout: float) -> float:
    """Worst case of one probe at ``baud``: the frames (11 bits a character) and the wait."""
    return PROBE_BYTES * 11 / baud + timeout


def estimate(lines: list[tuple[int, str]], units: list[int], timeout: float) -> float:
    """Seconds the scan takes at most: every unit probed at every line setting, none
    answering (a unit that answers costs less than one that times out)."""
    return sum(probe_time(baud, timeout) * len(units) for baud, _ in lines)


def format_duration(seconds: float) -> str:
    """``4m05s``, ``12.5s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass(frozen=True, slots=True)
class Found:
    """A unit that answered the probe."""

    unit: int
    answer: str  # "registers" or "exception 2 (illegal data address)"
    identity: dict[str, str] = field(default_factory=dict)  # FC 43/14: vendor, product, ...

    @property
    def label(self) -> str:
        parts = [self.identity.get(k, "") for k in ("vendor", "product", "revision")]
        return " ".join(p for p in parts if p)


def _yaml_text(text: str) -> str:
    """A YAML scalar for a name from a device: quoted when it needs to be."""
    safe = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{safe}"'


def config_stub(found: list[Found], *, port: str | None = None, baud: int = 9600,
                parity: str = "N", host: str | None = None, tcp_port: int = 502,
                framing: str = "rtu") -> str:
    """A ready-to-edit gateway config fragment for what answered: the bus (serial) and one
    device per unit, each with a commented example point to replace."""
    lines: list[str] = []
    if port is not None:
        lines += ["buses:", "  - name: rs485-1", f"    port: {port}", f"    baudrate: {baud}",
                  f"    parity: {parity}"]
        if framing != "rtu":
            lines.append(f"    framing: {framing}")
    lines.append("devices:" if found else "devices: []  # nothing answered")
    for f in found:
        lines.append(f"  - name: unit-{f.unit}")
        if f.label:
            lines.append(f"    # identification: {f.label}")
        if port is not None:
            lines += ["    driver: modbus-rtu", "    bus: rs485-1"]
        else:
            lines += ["    driver: modbus-tcp", f"    host: {host}"]
            if tcp_port != 502:
                lines.append(f"    port: {tcp_port}")
        lines.append(f"    unit: {f.unit}")
        if f.identity.get("product"):
            lines.append(f"    tags: {{model: {_yaml_text(f.identity['product'])}}}")
        lines += ["    points:  # from the device's register map; check with sensegate read",
                  "      - {name: value, table: holding, address: 0, type: uint16}"]
    return "\n".join(lines) + "\n"
