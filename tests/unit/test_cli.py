"""The command line as operators use it: exit codes, --version, usage errors, global options
after the command, help texts, the demo extra, and a closed pipe."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import __version__
from gateway.commands import check, cli
from gateway.runtime.exitcodes import ExitCode

ROOT = Path(__file__).resolve().parents[2]

GATEWAY = "gateway: {id: gw-1}\nmqtt: {host: broker.example.org}\ndevices: []\n"
BRIDGE = ("mqtt: {host: broker.example.org}\n"
          "influxdb: {url: 'http://127.0.0.1:8086', api: v1, database: sensing}\n")


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(argv)


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main(list(argv))
    assert exc.value.code == ExitCode.USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    return captured.err.splitlines()[-1]


def test_exit_codes_are_the_spec_s() -> None:
    assert [int(c) for c in (ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE)] == [0, 1, 2]
    assert ExitCode.CONFIG is ExitCode.USAGE
    assert ExitCode.BROKEN_PIPE == 141


@pytest.mark.parametrize("argv", [["--version"], ["check", "--version"]],
                         ids=["before", "after-command"])
def test_version(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"sensegate {__version__}\n"


@pytest.mark.parametrize(("argv", "message"), [
    (["demo", "--outage", "5x"],
     "sensegate demo: error: argument --outage: '5x' has an unknown duration unit 'x'; "
     "use ms, s, m, h or d"),
    (["demo", "--duration", "soon"],
     "sensegate demo: error: argument --duration: 'soon' is not a duration; "
     "write e.g. '500ms', '10s', '5m', '1h'"),
    (["demo", "--duration", "0"],
     "sensegate demo: error: argument --duration: '0' is not a positive duration"),
    (["demo", "--influx", "localhost:8086"],
     "sensegate demo: error: argument --influx: 'localhost:8086' is not an http(s) URL; "
     "write e.g. 'http://127.0.0.1:8086'"),
    (["--log-level", "loud", "check"],
     "sensegate: error: argument --log-level: invalid choice: 'loud' "
     "(choose from 'debug', 'info', 'warning', 'error')"),
    (["check", "--log-level", "loud"],
     "sensegate check: error: argument --log-level: invalid choice: 'loud' "
     "(choose from 'debug', 'info', 'warning', 'error')"),
    (["read"], "sensegate read: error: the following arguments are required: device"),
    ([], "sensegate: error: the following arguments are required: COMMAND"),
], ids=["unit", "not-a-duration", "zero", "url", "log-level", "log-level-after", "missing",
        "no-command"])
def test_bad_option_value_is_a_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # argparse quotes choices with repr() from Python 3.12.8 on, without quotes before
    assert usage_error(capsys, *argv).replace("'debug', 'info', 'warning', 'error'",
                                              "debug, info, warning, error") == \
        message.replace("'debug', 'info', 'warning', 'error'", "debug, info, warning, error")


@pytest.mark.parametrize(("text", "seconds"), [
    ("60s", 60.0), ("60", 60.0), ("1.5", 1.5), ("500ms", 0.5), ("5m", 300.0), ("1h", 3600.0),
])
def test_durations_take_units_and_bare_numbers_are_seconds(text: str, seconds: float) -> None:
    args = parse("demo", "--duration", text, "--outage", text)
    assert (args.duration, args.outage) == (seconds, seconds)


@pytest.mark.parametrize("argv", [
    ["--log-level", "debug", "check"],
    ["check", "--log-level", "debug"],
    ["check", "--log-level", "DEBUG"],
    ["--log-level", "error", "check", "--log-level", "debug"],
], ids=["before", "after", "upper-case", "after-wins"])
def test_global_options_before_or_after_the_command(argv: list[str]) -> None:
    assert parse(*argv).log_level == "debug"


def test_bad_log_level_from_the_environment_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SENSEGATE_LOG_LEVEL", "loud")
    assert usage_error(capsys, "schema") == (
        "sensegate: error: $SENSEGATE_LOG_LEVEL: invalid choice: 'loud' "
        "(choose from debug, info, warning, error)")
    assert parse("schema", "--log-level", "error").log_level == "error"  # the option wins


def test_log_level_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENSEGATE_LOG_LEVEL", raising=False)
    assert parse("check").log_level == "info"
    monkeypatch.setenv("SENSEGATE_LOG_LEVEL", "warning")
    assert parse("schema").log_level == "warning"


def test_every_command_is_listed_with_its_summary(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    words = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal
    for name, (short, _description, _examples) in cli.COMMANDS.items():
        assert f" {name} {short} " in words


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_help_has_a_description_and_examples(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    _short, description, examples = cli.COMMANDS[command]
    assert description.splitlines()[0] in out
    assert "examples:" in out
    example_lines = [line.strip() for line in examples.splitlines()]
    assert example_lines
    assert all(line in out for line in example_lines)
    assert all(f"sensegate {command}" in line or "SENSEGATE_CONFIG=" in line
               for line in example_lines)


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    (tmp_path / "gateway.yaml").write_text(GATEWAY, encoding="utf-8")
    (tmp_path / "bridge.yaml").write_text(BRIDGE, encoding="utf-8")
    return tmp_path


def test_config_kind_by_shape(configs: Path) -> None:
    assert check.config_kind(str(configs / "gateway.yaml")) == "gateway"
    assert check.config_kind(str(configs / "bridge.yaml")) == "bridge"
    assert check.config_kind(str(configs / "missing.yaml")) == "gateway"


def test_check_a_bridge_config_by_its_shape(
    configs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = configs / "bridge.yaml"
    assert cli.main(["check", "-c", str(path)]) == ExitCode.OK
    assert capsys.readouterr().out.splitlines() == [
        f"{path}: valid (bridge config)",
        "mqtt: broker.example.org:1883, client id sensegate-bridge, subscribe "
        "sensegate/+/+/data, no shared group (one bridge), qos 1",
        "influxdb: http://127.0.0.1:8086 (api v1), database sensing",
        "batches: up to 5000 points, flushed every 1s",
        "state_dir: /var/lib/sensegate-bridge",
    ]


def test_check_bridge_flag_reads_any_file_as_a_bridge_config(
    configs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = configs / "gateway.yaml"
    assert cli.main(["check", "--bridge", "-c", str(path)]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert "missing required key 'influxdb'" in err
    assert "unknown key 'gateway'" in err


def test_check_a_gateway_config(configs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = configs / "gateway.yaml"
    assert cli.main(["check", "-c", str(path), "--log-level", "error"]) == ExitCode.OK
    assert capsys.readouterr().out.splitlines()[0] == f"{path}: valid"


def test_demo_without_its_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "DEMO_EXTRA_MODULES", ("json", "sensegate_no_such_module"))
    assert cli.main(["demo", "--duration", "1s"]) == ExitCode.USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("sensegate demo needs the demo extra (sensegate_no_such_module not "
                            "installed): pip install 'sensegate[demo]'\n")


@pytest.mark.parametrize("command", [
    "schema",
    "check -c config/modbus-tcp.yaml",
], ids=["schema", "check"])
def test_output_piped_into_head_ends_quietly(command: str) -> None:
    """`head -c 0` exits at once, so the command writes into a pipe with no reader."""
    proc = subprocess.run(
        ["bash", "-c", f'"$0" -m gateway {command} | head -c 0; echo "${{PIPESTATUS[0]}}"',
         sys.executable],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.stderr == ""
    assert proc.stdout.strip() == str(int(ExitCode.BROKEN_PIPE))
