"""The `sensegate` command line: argument parsing and dispatch only.

Each command lives in its own module and is imported lazily, so `sensegate check` or
`sensegate schema` never pays for pymodbus, aiomqtt or influxdb-client imports.

What operators expect of a command line, and this one does: `--version`; `--help` on every
command with a description and examples; a bad option value is a usage error (exit 2, one
line, no traceback); global options (`--log-level`) before or after the command; output
piped into `head` ends quietly.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
import urllib.parse
from collections.abc import Sequence
from typing import Any

from gateway import __version__
from gateway.core.errors import ConfigError
from gateway.core.units import parse_duration
from gateway.runtime.exitcodes import ExitCode

DEFAULT_CONFIG = "/etc/sensegate/gateway.yaml"
DEFAULT_BRIDGE_CONFIG = "/etc/sensegate/bridge.yaml"
LOG_LEVELS = ("debug", "info", "warning", "error")
# `sensegate demo` runs an embedded broker and a live view: both come with this extra.
DEMO_EXTRA_MODULES = ("amqtt", "rich")
DEMO_INSTALL_HINT = "pip install 'sensegate[demo]'"


def default_config_path() -> str:
    return os.environ.get("SENSEGATE_CONFIG") or DEFAULT_CONFIG


# --- option value types: a bad value is a usage error (exit 2), never a traceback ----------


def duration(text: str) -> float:
    """A duration option: ``500ms``, ``20s``, ``5m``, ``1h``; a bare number is seconds."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration")
    return seconds


def http_url(text: str) -> str:
    """An ``http://`` or ``https://`` URL with a host."""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http(s) URL; write e.g. 'http://127.0.0.1:8086'")
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} has a bad port") from None
    return text


def host_port(text: str) -> tuple[str, int]:
    """``HOST`` or ``HOST:PORT`` (port 502 unless given)."""
    host, colon, port = text.rpartition(":")
    if not colon or "]" in port:
        return text, 502
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: {port!r} is not a TCP port")
    return host.strip("[]"), int(port)


def baud_option(text: str) -> int | str:
    """A baud rate, or ``auto``."""
    if text.lower() == "auto":
        return "auto"
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a baud rate (e.g. 9600) or auto")
    return int(text)


def unit_ids(text: str) -> list[int]:
    from gateway.core.scan import parse_units

    try:
        return parse_units(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --- the parser ---------------------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the descriptions' and examples' own line breaks."""


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Options every command takes, before or after its name.

    The top-level parser sets the defaults; a command's parser leaves the attribute alone
    unless the option is given after the command (`argparse.SUPPRESS`), so
    ``sensegate --log-level debug check`` and ``sensegate check --log-level debug`` agree.
    """
    default: Any = os.environ.get("SENSEGATE_LOG_LEVEL", "info") if top else argparse.SUPPRESS
    parser.add_argument(
        "--log-level", default=default, choices=LOG_LEVELS, type=str.lower,
        help="log verbosity on stderr (default: $SENSEGATE_LOG_LEVEL, else info)",
    )
    parser.add_argument("--version", action="version", version=f"sensegate {__version__}",
                        help="print the version and exit")


COMMANDS: dict[str, tuple[str, str, str]] = {
    # name: (one-line help, description, examples)
    "run": (
        "the gateway daemon: poll, buffer, publish",
        "Poll the configured devices, keep every reading in the durable outbox and publish it\n"
        "over MQTT. systemd Type=notify aware; SIGHUP reloads the config, SIGTERM stops after\n"
        "draining. Exit 0 on a clean stop, 2 on a bad config, 1 if fatal.",
        "  sensegate run -c /etc/sensegate/gateway.yaml\n"
        "  SENSEGATE_CONFIG=site.yaml sensegate run --log-level debug",
    ),
    "check": (
        "validate a gateway or bridge config and print a summary",
        "Validate a config without opening any port or connection. Every error is printed as\n"
        "FILE:LINE:COL: key.path: message, all of them in one run. A valid gateway config prints\n"
        "its devices, Modbus requests per scan and each RS-485 bus's time per scan and load; a\n"
        "bridge config (recognised by its influxdb section, or with --bridge) its MQTT and\n"
        "InfluxDB settings. Exit 0 valid, 2 invalid.",
        "  sensegate check -c site.yaml\n"
        "  sensegate check -c /etc/sensegate/bridge.yaml\n"
        "  sensegate check --bridge -c central.yaml",
    ),
    "read": (
        "poll one device once and print its points",
        "Poll one device of the config once, now, outside the daemon, and print every point:\n"
        "name, raw registers (hex), value, unit, quality. --all-orders also decodes each\n"
        "multi-register point under every byte order. Exit 0 ok, 1 the device failed, 2 no\n"
        "such device or a bad config.",
        "  sensegate read -c site.yaml meter-main\n"
        "  sensegate read -c site.yaml meter-main --all-orders\n"
        "  sensegate read -c site.yaml rws-1 --json",
    ),
    "scan": (
        "find the Modbus devices on an RS-485 line or a TCP host",
        "Probe unit ids with one cheap read each (holding register 0, short timeout) and\n"
        "print every unit that answered, its device identification (FC 43/14) where it has\n"
        "one, and a config stub (bus and devices) to paste and edit. --baud auto tries the\n"
        "common speeds and parities, most common first, until units answer. Prints the time\n"
        "it may take first; never writes; refuses a port or host the local gateway's config\n"
        "polls unless --force. Exit 0 devices found, 1 none, 2 bad options or refused.",
        "  sensegate scan --port /dev/ttyUSB0 --baud auto --units 1-20\n"
        "  sensegate scan --port /dev/serial/by-id/usb-FTDI_FT232R-if00-port0 --baud 19200 "
        "--parity E\n"
        "  sensegate scan --host 10.0.0.21 --units 1-10",
    ),
    "simulate": (
        "serve the config's devices as simulators, for practice without hardware",
        "Serve the config's devices (or the ones named) as simulators on this machine: TCP\n"
        "devices on free loopback ports, each RS-485 bus on a pty, each serial-line sensor on\n"
        "a pty printing records its own pattern reads, with plausible values that change\n"
        "every second. Prints where each listens and a config pointing at them (-o writes it\n"
        "to a file), to practise check, read --all-orders and run; a serial-line pattern no\n"
        "record can be built for (look-arounds, back-references, ...) is left out, with the\n"
        "reason. Runs until Ctrl-C (or --duration). Exit 0, 2 on a bad config or device name.",
        "  sensegate simulate -c site.yaml -o /tmp/practice.yaml\n"
        "  sensegate simulate -c site.yaml meter-main rws-1\n"
        "  sensegate simulate -c site.yaml --duration 10m\n"
        "  sensegate simulate --profile eastron-sdm630 -o /tmp/meter.yaml",
    ),
    "write": (
        "write points of one device now, with the read-back",
        "A technician's write on site: the same checks as a command from the centre (the\n"
        "point must be writable; type, range, allowed values and max_rate are checked), no\n"
        "signature; the point is read back and printed, and the write audited under\n"
        "state_dir. VALUE is JSON (40, 21.5, true, \"text\"). Exit 0 done, 1 failed, 2 refused.",
        "  sensegate write -c site.yaml vms-3 dim_pct=40\n"
        "  sensegate write -c site.yaml vms-3 mode=2 relay=true",
    ),
    "outbox": (
        "offline buffer status",
        "Show the offline buffer of the gateway's state_dir: pending messages and readings,\n"
        "bytes on disk, the oldest reading's age and how many were dropped. Safe to run while\n"
        "the daemon runs.",
        "  sensegate outbox -c /etc/sensegate/gateway.yaml",
    ),
    "bridge": (
        "central side: MQTT to InfluxDB",
        "Subscribe to the gateways' data and write it to InfluxDB, acknowledging each message\n"
        "only after InfluxDB accepted it; what cannot be written goes to a dead-letter file.\n"
        "Exit codes as for run.",
        f"  sensegate bridge -c {DEFAULT_BRIDGE_CONFIG}\n"
        "  sensegate bridge -c central.yaml --log-level debug",
    ),
    "demo": (
        "a complete simulated site on this machine",
        "Run simulated Modbus TCP, Modbus RTU and serial-line sensors, the real gateway, an\n"
        "embedded MQTT broker (and, with --influx, the bridge) with a live view. At the end\n"
        "the outbox drains and a summary compares what was polled with what an independent\n"
        "subscriber received. Exit 0 when nothing was lost, 1 otherwise.\n"
        f"Needs the demo extra: {DEMO_INSTALL_HINT}",
        "  sensegate demo\n"
        "  sensegate demo --duration 60s --outage 20s\n"
        "  sensegate demo --influx http://127.0.0.1:8086",
    ),
    "fleet": (
        "the operations centre's tool: fleet status, signed remote configuration",
        "Work on many gateways through their MQTT broker (SPEC §7):\n"
        "  status   every gateway's retained health record: state, version, config hash,\n"
        "           devices and failing ones, outbox backlog, last seen (--json, filters)\n"
        "  push     validate FILE as check does, sign it with KEY, send it to GATEWAY and\n"
        "           print its result: applied, refused (with LINE:COL), rolled_back\n"
        "  keygen   make an Ed25519 key pair: KEY (private, stays here) and KEY.pub\n"
        "  command  sign a device command (SPEC §6) with KEY, send it, print its result\n"
        "The broker: --broker HOST[:PORT] or $SENSEGATE_BROKER, --username or\n"
        "$SENSEGATE_MQTT_USER, the password from $SENSEGATE_MQTT_PASSWORD, --ca-file for TLS.\n"
        "Exit 0 done, 1 refused / rolled back / no answer / broker unreachable, 2 usage.",
        "  sensegate fleet keygen ~/.sensegate/fleet-key\n"
        "  sensegate fleet status --broker broker.example.org:8883 --ca-file ca.pem\n"
        "  sensegate fleet status --failing --json\n"
        "  sensegate fleet status 'xinwu-*' --state offline\n"
        "  sensegate fleet push --key ~/.sensegate/fleet-key xinwu-road-017 road-017.yaml",
    ),
    "schema": (
        "print the JSON Schema of the gateway (or bridge) config",
        "Print the JSON Schema of the gateway config (or of the bridge config with --bridge),\n"
        "for editors such as VS Code's YAML extension.",
        "  sensegate schema > sensegate.schema.json\n"
        "  sensegate schema --bridge > sensegate-bridge.schema.json",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sensegate",
        description="Edge gateway: Modbus and serial sensors to MQTT, and MQTT to InfluxDB.",
        epilog="examples:\n  sensegate check -c site.yaml\n  sensegate demo --duration 60s\n"
        "  sensegate COMMAND --help",
        formatter_class=_Formatter,
    )
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str) -> argparse.ArgumentParser:
        short, description, examples = COMMANDS[name]
        p = sub.add_parser(name, help=short, description=description,
                           epilog=f"examples:\n{examples}", formatter_class=_Formatter)
        _global_options(p, top=False)
        return p

    def with_config(p: argparse.ArgumentParser, default: str = DEFAULT_CONFIG) -> None:
        p.add_argument(
            "-c", "--config", default=None, metavar="FILE",
            help=f"config file (default: $SENSEGATE_CONFIG, else {default})",
        )

    with_config(command("run"))
    check = command("check")
    with_config(check)
    check.add_argument("--bridge", action="store_true",
                       help="validate as a bridge config, whatever its shape")
    read = command("read")
    with_config(read)
    read.add_argument("device", help="device name from the config")
    read.add_argument("--json", action="store_true", help="print JSON instead of a table")
    read.add_argument(
        "--all-orders", action="store_true",
        help="also decode multi-register points under every byte order",
    )
    scan = command("scan")
    with_config(scan)
    where = scan.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", metavar="DEVICE", help="serial device of the RS-485 line")
    where.add_argument("--host", type=host_port, metavar="HOST[:PORT]",
                       help="Modbus TCP host (port 502 unless given)")
    scan.add_argument("--baud", type=baud_option, default=9600, metavar="RATE|auto",
                      help="line speed, or auto: try the common speeds and parities "
                      "(default: 9600)")
    scan.add_argument("--parity", choices=("N", "E", "O"), type=str.upper, default="N",
                      help="parity with a fixed --baud (default: N)")
    scan.add_argument("--units", type=unit_ids, default=None, metavar="LIST",
                      help="unit ids to probe, e.g. 1-20 or 1,5,10-12 (default: 1-247)")
    scan.add_argument("--timeout", type=duration, default=None, metavar="DURATION",
                      help="wait per probe (default: 100ms serial, 300ms TCP)")
    scan.add_argument("--framing", choices=("rtu", "ascii"), default="rtu",
                      help="serial framing (default: rtu)")
    scan.add_argument("--force", action="store_true",
                      help="scan even a port or host the local gateway's config polls")
    simulate = command("simulate")
    with_config(simulate)
    simulate.add_argument("devices", nargs="*", metavar="DEVICE",
                          help="simulate only these devices (default: every device)")
    simulate.add_argument("-o", "--output", metavar="FILE", default=None,
                          help="write the config pointing at the simulators to FILE")
    simulate.add_argument("--duration", type=duration, default=None, metavar="DURATION",
                          help="stop after this long (default: until Ctrl-C)")
    simulate.add_argument("--profile", action="append", default=[], metavar="NAME",
                          help="simulate a device of this profile instead of a config's "
                          "(Modbus TCP, or serial-line for a profile with a pattern; "
                          "repeatable)")
    write = command("write")
    with_config(write)
    write.add_argument("device", help="device name from the config")
    write.add_argument("values", nargs="+", metavar="POINT=VALUE", help="what to write")
    with_config(command("outbox"))
    with_config(command("bridge"), DEFAULT_BRIDGE_CONFIG)
    demo = command("demo")
    demo.add_argument("--duration", type=duration, default=None, metavar="DURATION",
                      help="run this long (e.g. 60s, 5m; a bare number is seconds), then stop "
                      "and print the summary (default: until Ctrl-C)")
    demo.add_argument(
        "--outage", type=duration, default=None, metavar="DURATION",
        help="stop the embedded broker for this long (e.g. 20s), then bring it back",
    )
    demo.add_argument("--influx", type=http_url, default=None, metavar="URL",
                      help="also run the bridge into this InfluxDB 1.x URL")
    demo.add_argument("--no-live", action="store_true", help="plain log output, no live view")
    _fleet_parser(command("fleet"))
    schema = command("schema")
    schema.add_argument("--bridge", action="store_true", help="the bridge config's schema instead")
    return parser


def _broker(text: str) -> str:
    from gateway.commands.fleet import parse_broker

    try:
        parse_broker(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _fleet_parser(fleet: argparse.ArgumentParser) -> None:
    actions = fleet.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")

    def action(name: str, short: str, examples: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=short, description=short[0].upper() + short[1:],
                               epilog=f"examples:\n{examples}", formatter_class=_Formatter)
        _global_options(p, top=False)
        return p

    def with_broker(p: argparse.ArgumentParser) -> None:
        p.add_argument("--broker", type=_broker, metavar="HOST[:PORT]",
                       default=os.environ.get("SENSEGATE_BROKER", "127.0.0.1:1883"),
                       help="MQTT broker (default: $SENSEGATE_BROKER, else 127.0.0.1:1883)")
        p.add_argument("--username", default=os.environ.get("SENSEGATE_MQTT_USER"),
                       help="MQTT user (default: $SENSEGATE_MQTT_USER); the password comes "
                       "from $SENSEGATE_MQTT_PASSWORD")
        p.add_argument("--ca-file", metavar="PEM", help="use TLS, verifying the broker with "
                       "this CA")
        p.add_argument("--prefix", default="sensegate", help="topic prefix (default: "
                       "sensegate)")

    def signed_to_gateway(p: argparse.ArgumentParser) -> None:
        """What every signed message to one gateway takes: the broker, the key, the id."""
        with_broker(p)
        p.add_argument("--key", required=True, metavar="KEY", help="Ed25519 private key (PEM)")
        p.add_argument("gateway", metavar="GATEWAY", help="the gateway's id")

    status = action("status", "list every gateway from its retained health record",
                    "  sensegate fleet status\n  sensegate fleet status 'xinwu-*' --failing\n"
                    "  sensegate fleet status --state offline --json")
    with_broker(status)
    status.add_argument("patterns", nargs="*", metavar="GATEWAY",
                        help="gateway ids or shell patterns (default: all)")
    status.add_argument("--state", choices=("online", "offline"), help="only in this state")
    status.add_argument("--failing", action="store_true",
                        help="only gateways with failing devices")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--wait", type=duration, default=3.0, metavar="DURATION",
                        help="wait at most this long for the retained records (default 3s)")
    push = action("push", "validate, sign and send a config to one gateway; print its result",
                  "  sensegate fleet push --key fleet-key xinwu-road-017 road-017.yaml\n"
                  "  sensegate fleet push --key fleet-key --wait-probation gw-3 gw-3.yaml")
    signed_to_gateway(push)
    push.add_argument("file", metavar="FILE", help="the gateway config to run")
    push.add_argument("--timeout", type=duration, default=60.0, metavar="DURATION",
                      help="wait this long for the result (default 60s)")
    push.add_argument("--wait-probation", action="store_true",
                      help="after 'applied', wait for the probation to end and report a "
                      "rollback")
    push.add_argument("--json", action="store_true",
                      help="print the gateway's results as JSON instead of lines")
    keygen = action("keygen", "make an Ed25519 key pair for signing configs",
                    "  sensegate fleet keygen ~/.sensegate/fleet-key")
    keygen.add_argument("key", metavar="KEY", help="private key file to create (KEY.pub too)")
    command = action("command", "sign and send a device command; print its result",
                     "  sensegate fleet command --key fleet-key gw-1 vms-3 dim_pct=40\n"
                     "  sensegate fleet command --key fleet-key gw-1 vms-3 mode=2 relay=true")
    signed_to_gateway(command)
    command.add_argument("device", metavar="DEVICE", help="the device to command")
    command.add_argument("values", nargs="+", metavar="POINT=VALUE",
                         help="points to write; VALUE is JSON (40, 21.5, true)")
    command.add_argument("--timeout", type=duration, default=30.0, metavar="DURATION",
                         help="how long to wait for the result (default: 30s)")
    command.add_argument("--json", action="store_true", help="print the result as JSON")


def _run_fleet(args: argparse.Namespace) -> int:
    from gateway.commands import fleet

    action = args.fleet_command
    if action == "keygen":
        return fleet.keygen(sys.stdout, args.key)
    host, port = fleet.parse_broker(args.broker)
    broker = fleet.Broker(host, port, username=args.username,
                          password=os.environ.get("SENSEGATE_MQTT_PASSWORD"),
                          ca_file=args.ca_file, prefix=args.prefix)
    if action == "status":
        return fleet.status(broker, sys.stdout, patterns=args.patterns, state=args.state,
                            failing=args.failing, as_json=args.json, wait=args.wait)
    if action == "command":
        return fleet.command(broker, sys.stdout, key_path=args.key, gateway=args.gateway,
                             device=args.device, assignments=args.values,
                             timeout=args.timeout, as_json=args.json)
    return fleet.push(broker, sys.stdout, key_path=args.key, gateway=args.gateway,
                      path=args.file, timeout=args.timeout, wait_probation=args.wait_probation,
                      as_json=args.json)


def setup_logging(level: str) -> None:
    from gateway.runtime.logs import setup

    setup(level)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.log_level not in LOG_LEVELS:  # from $SENSEGATE_LOG_LEVEL: argparse checks options only
        parser.error(f"$SENSEGATE_LOG_LEVEL: invalid choice: {args.log_level!r} "
                     f"(choose from {', '.join(LOG_LEVELS)})")
    setup_logging(args.log_level)
    try:
        code = dispatch(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        print(f"{len(exc.issues)} error(s); config not valid", file=sys.stderr)
        return ExitCode.CONFIG
    except BrokenPipeError:
        return _output_closed()
    except KeyboardInterrupt:
        return ExitCode.OK


def _output_closed() -> int:
    """Stdout was closed early (``sensegate schema | head``): end quietly, as `cat` would.

    Later writes and the interpreter's final flush go to /dev/null instead of raising again.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return ExitCode.BROKEN_PIPE


def demo_extra_missing() -> list[str]:
    return [m for m in DEMO_EXTRA_MODULES if importlib.util.find_spec(m) is None]


def dispatch(args: argparse.Namespace) -> int:
    command = args.command
    if command == "schema":
        from gateway.config import schema

        doc = schema.bridge_json_schema() if args.bridge else schema.gateway_json_schema()
        print(json.dumps(doc, indent=2))
        return ExitCode.OK
    if command == "demo":
        missing = demo_extra_missing()
        if missing:
            print(f"sensegate demo needs the demo extra ({', '.join(missing)} not installed): "
                  f"{DEMO_INSTALL_HINT}", file=sys.stderr)
            return ExitCode.USAGE
        from gateway.sim import demo

        return demo.run(args)

    if command == "fleet":
        return _run_fleet(args)
    path = args.config or default_config_path()
    if command in ("run", "bridge"):
        # Until the daemon's event loop installs its own handlers, a SIGTERM (systemd
        # stopping us during start-up) means: nothing polled yet, exit cleanly with 0.
        signal.signal(signal.SIGTERM, _exit_cleanly)
    if command == "bridge":
        if args.config is None and not os.environ.get("SENSEGATE_CONFIG"):
            path = DEFAULT_BRIDGE_CONFIG
        from gateway.bridge import service as bridge

        return bridge.run(path)
    if command == "check":
        from gateway.commands import check

        return check.run(path, sys.stdout, bridge=True if args.bridge else None)
    if command == "read":
        from gateway.commands import read as probe

        return probe.run(path, args.device, sys.stdout, as_json=args.json,
                         all_orders=args.all_orders)
    if command == "simulate":
        from gateway.sim import serve

        return serve.run(path, args.devices, args.output, args.duration, args.profile)
    if command == "scan":
        return _scan(args, path)
    if command == "write":
        from gateway.commands import write as writing

        return writing.run(path, args.device, args.values, sys.stdout)
    if command == "outbox":
        from gateway.edge import outbox as buffer

        return buffer.print_status(path, sys.stdout)
    if command == "run":
        from gateway.edge import daemon

        return daemon.run(path)
    raise AssertionError(f"unhandled command {command!r}")


def _scan(args: argparse.Namespace, path: str) -> int:
    from gateway.commands import scan
    from gateway.core.scan import LINE_SETTINGS, RTU_UNITS

    serial = args.port is not None
    lines = list(LINE_SETTINGS) if args.baud == "auto" else [(args.baud, args.parity)]
    host, tcp_port = args.host if args.host is not None else (None, 502)
    options = scan.ScanOptions(
        port=args.port, host=host, tcp_port=tcp_port, lines=lines,
        units=args.units or list(RTU_UNITS),
        timeout=args.timeout or (0.1 if serial else 0.3), force=args.force, config=path,
        framing=args.framing,
    )
    return scan.run(options)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(ExitCode.OK)


if __name__ == "__main__":
    raise SystemExit(main())
