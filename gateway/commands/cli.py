"""The `sensegate` command line: argument parsing and dispatch only.

Each command lives in its own module and is imported lazily, so `sensegate check` or
`sensegate schema` never pays for pymodbus, aiomqtt or influxdb-client imports.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence

from gateway.core.errors import ConfigError

DEFAULT_CONFIG = "/etc/sensegate/gateway.yaml"

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_CONFIG = 2


def default_config_path() -> str:
    return os.environ.get("SENSEGATE_CONFIG") or DEFAULT_CONFIG


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sensegate",
        description="Edge gateway: Modbus and serial sensors to MQTT, and MQTT to InfluxDB.",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("SENSEGATE_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="log verbosity on stderr (default: info)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "-c", "--config", default=None,
            help=f"config file (default: $SENSEGATE_CONFIG, else {DEFAULT_CONFIG})",
        )
        return p

    with_config(sub.add_parser("run", help="the gateway daemon: poll, buffer, publish"))
    with_config(sub.add_parser("check", help="validate a config and print a summary"))
    read = with_config(sub.add_parser("read", help="poll one device once and print its points"))
    read.add_argument("device", help="device name from the config")
    read.add_argument("--json", action="store_true", help="print JSON instead of a table")
    read.add_argument(
        "--all-orders", action="store_true",
        help="also decode multi-register points under every byte order",
    )
    with_config(sub.add_parser("outbox", help="offline buffer status"))
    bridge = sub.add_parser("bridge", help="central side: MQTT to InfluxDB")
    bridge.add_argument(
        "-c", "--config", default=None,
        help="bridge config file (default: $SENSEGATE_CONFIG, else "
        "/etc/sensegate/bridge.yaml)",
    )
    demo = sub.add_parser("demo", help="a complete simulated site on this machine")
    demo.add_argument("--duration", type=float, default=None, help="seconds, then exit 0")
    demo.add_argument(
        "--outage", default=None,
        help="stop the embedded broker for this long (e.g. 20s), then bring it back",
    )
    demo.add_argument("--influx", default=None, help="also run the bridge into this InfluxDB URL")
    demo.add_argument("--no-live", action="store_true", help="plain log output, no live view")
    schema = sub.add_parser("schema", help="print the JSON Schema of the gateway config")
    schema.add_argument("--bridge", action="store_true", help="the bridge config's schema instead")
    return parser


def setup_logging(level: str) -> None:
    from gateway.runtime.logs import setup

    setup(level)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return dispatch(args)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        print(f"{len(exc.issues)} error(s); config not valid", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK


def dispatch(args: argparse.Namespace) -> int:
    command = args.command
    if command == "schema":
        from gateway.config import schema

        doc = schema.bridge_json_schema() if args.bridge else schema.gateway_json_schema()
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    if command == "demo":
        from gateway.sim import demo

        return demo.run(args)

    path = args.config or default_config_path()
    if command in ("run", "bridge"):
        # Until the daemon's event loop installs its own handlers, a SIGTERM (systemd
        # stopping us during start-up) means: nothing polled yet, exit cleanly with 0.
        signal.signal(signal.SIGTERM, _exit_cleanly)
    if command == "bridge":
        if args.config is None and not os.environ.get("SENSEGATE_CONFIG"):
            path = "/etc/sensegate/bridge.yaml"
        from gateway.bridge import service as bridge

        return bridge.run(path)
    if command == "check":
        from gateway.commands import check

        return check.run(path, sys.stdout)
    if command == "read":
        from gateway.commands import read as probe

        return probe.run(path, args.device, sys.stdout, as_json=args.json,
                         all_orders=args.all_orders)
    if command == "outbox":
        from gateway.edge import outbox as buffer

        return buffer.print_status(path, sys.stdout)
    if command == "run":
        from gateway.edge import daemon

        return daemon.run(path)
    raise AssertionError(f"unhandled command {command!r}")


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(EXIT_OK)


if __name__ == "__main__":
    raise SystemExit(main())
