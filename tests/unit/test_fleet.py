"""Fleet: the health record's bytes, the files kept under state_dir/fleet, the recovery of an
apply a crash interrupted, the config fields, and `sensegate fleet`'s pure parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.commands import fleet as cli
from gateway.config.load import load_gateway_config
from gateway.core.errors import ConfigError
from gateway.core.payload import Health, config_result_topic, config_set_topic, health_payload
from gateway.edge.fleet import FleetFiles, recover, sha256, write_atomic
from gateway.runtime.signing import public_line, write_key_pair

HEALTH = Health(version="0.1.0", config_sha256="ab" * 32, config_applied_ts=1764000000123456789,
                devices_total=12, failing=("rws-2", "loop-7"), outbox_pending=1234,
                outbox_oldest_s=61.4, outbox_dropped=0, uptime_s=86400.7)


def test_health_record_shape() -> None:
    record = json.loads(health_payload("online", 1764000001000000000, HEALTH))
    assert record == {
        "state": "online", "ts": 1764000001000000000, "version": "0.1.0",
        "config": {"sha256": "ab" * 32, "applied_ts": 1764000000123456789},
        "devices": {"total": 12, "failing": ["loop-7", "rws-2"]},
        "outbox": {"pending": 1234, "oldest_s": 61, "dropped": 0},
        "uptime_s": 86401,
    }


def test_health_record_is_small_enough_for_a_cellular_link() -> None:
    # docs/fleet.md: about 300 bytes, once a minute: ~0.5 MB a day with MQTT overhead
    assert len(health_payload("online", 1764000001000000000, HEALTH)) < 320


def test_empty_outbox_has_no_oldest_age() -> None:
    empty = Health("0.1.0", "", 0, 0, (), 0, None, 0, 0.0)
    assert json.loads(health_payload("offline", 1, empty))["outbox"]["oldest_s"] is None


def test_config_topics() -> None:
    assert config_set_topic("sensegate", "gw-1") == "sensegate/gw-1/config/set"
    assert config_result_topic("city/sg/", "gw-1") == "city/sg/gw-1/config/result"
    with pytest.raises(ValueError, match="cannot be a topic level"):
        config_set_topic("sensegate", "gw/1")


# --- files under state_dir/fleet ----------------------------------------------------------


def test_history_keeps_the_last_n_configs_once_each(tmp_path: Path) -> None:
    files = FleetFiles(str(tmp_path), keep=3)
    paths = [files.save_config(f"n: {n}\n".encode()) for n in range(5)]
    assert files.save_config(b"n: 4\n") == paths[4]  # the same content: the same file
    kept = files.history()
    assert [Path(p).read_bytes() for p in kept] == [b"n: 2\n", b"n: 3\n", b"n: 4\n"]


def test_write_atomic_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "gateway.yaml"
    write_atomic(str(target), b"a: 1\n")
    write_atomic(str(target), b"a: 2\n")
    assert target.read_bytes() == b"a: 2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.yaml"]


def test_write_atomic_keeps_the_permissions_of_the_file_it_replaces(tmp_path: Path) -> None:
    target = tmp_path / "gateway.yaml"
    target.write_bytes(b"a: 1\n")
    target.chmod(0o640)
    write_atomic(str(target), b"a: 2\n")
    assert target.stat().st_mode & 0o777 == 0o640


def _journal(tmp_path: Path, old: bytes, new: bytes, on_disk: bytes) -> tuple[Path, FleetFiles]:
    config = tmp_path / "gateway.yaml"
    files = FleetFiles(str(tmp_path / "state"))
    previous = files.save_config(old)
    files.save_config(new)
    files.write_journal({"id": "c-9", "previous": previous, "previous_sha": sha256(old),
                         "new_sha": sha256(new)})
    config.write_bytes(on_disk)
    return config, files


def test_recover_puts_the_previous_config_back_when_the_new_one_was_on_probation(
    tmp_path: Path,
) -> None:
    config, files = _journal(tmp_path, b"old: 1\n", b"new: 1\n", on_disk=b"new: 1\n")
    outcome = recover(str(config), str(tmp_path / "state"))
    assert config.read_bytes() == b"old: 1\n"
    assert outcome is not None and outcome["status"] == "rolled_back"
    assert outcome["id"] == "c-9" and "restarted before the config passed" in outcome["reason"]
    assert files.journal() is None
    assert files.pending_results() == [{"topic": None, "result": outcome}]
    assert recover(str(config), str(tmp_path / "state")) is None  # done: nothing left


def test_recover_when_the_crash_came_before_the_rename(tmp_path: Path) -> None:
    config, files = _journal(tmp_path, b"old: 1\n", b"new: 1\n", on_disk=b"old: 1\n")
    outcome = recover(str(config), str(tmp_path / "state"))
    assert config.read_bytes() == b"old: 1\n"
    assert outcome is not None and "during the apply" in outcome["reason"]
    assert files.journal() is None


def test_recover_leaves_a_file_the_operator_edited_since(tmp_path: Path) -> None:
    config, files = _journal(tmp_path, b"old: 1\n", b"new: 1\n", on_disk=b"mine: 1\n")
    assert recover(str(config), str(tmp_path / "state")) is None
    assert config.read_bytes() == b"mine: 1\n"
    assert files.journal() is None


def test_recover_without_a_journal_creates_nothing(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_bytes(b"a: 1\n")
    assert recover(str(config), str(tmp_path / "state")) is None
    assert not (tmp_path / "state").exists()


# --- config fields ------------------------------------------------------------------------

BASE = """\
gateway: {{id: gw-1, state_dir: {state}, status_interval: 10s}}
mqtt: {{host: 127.0.0.1}}
fleet:
  public_key: {key}
  probation: 30s
devices: []
"""


def test_fleet_fields_load_with_the_key_inline_or_from_a_file(tmp_path: Path) -> None:
    public = write_key_pair(str(tmp_path / "k"))
    for key in (public_line(public), str(tmp_path / "k.pub"), "k.pub"):
        path = tmp_path / "gw.yaml"
        path.write_text(BASE.format(state=tmp_path, key=key))
        config = load_gateway_config(str(path))
        assert config.fleet.key == public
        assert (config.fleet.probation, config.fleet.max_age, config.fleet.keep) == (30, 300, 5)
        assert config.status_interval == 10


def test_check_says_remote_configuration_is_on(tmp_path: Path) -> None:
    from gateway.commands.check import summary

    public = write_key_pair(str(tmp_path / "k"))
    path = tmp_path / "gw.yaml"
    path.write_text(BASE.format(state=tmp_path, key=public_line(public)))
    lines = summary(load_gateway_config(str(path)))
    assert f"fleet: remote configuration on (key {public_line(public)[:8]}), probation 30s, " \
           "max_age 5m" in lines


def test_fleet_is_off_without_a_key(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("gateway: {id: gw-1}\nmqtt: {host: h}\ndevices: []\n")
    config = load_gateway_config(str(path))
    assert not config.fleet.enabled and config.status_interval == 60


@pytest.mark.parametrize(
    ("key", "message"),
    [
        pytest.param("AAAA", "4:15: fleet.public_key: an Ed25519 public key is 32 bytes",
                     id="short inline"),
        pytest.param("./missing.pub", "4:15: fleet.public_key: cannot read", id="no file"),
    ],
)
def test_bad_fleet_keys_are_config_errors_at_their_position(
    tmp_path: Path, key: str, message: str
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(BASE.format(state=tmp_path, key=key))
    with pytest.raises(ConfigError) as err:
        load_gateway_config(str(path))
    assert message in str(err.value)


# --- sensegate fleet ----------------------------------------------------------------------


def test_literal_secrets_are_found_and_vars_are_not() -> None:
    text = ("mqtt:\n  password: hunter2\n  username: ${U}\n"
            "influx:\n  token: '${TOKEN}'\n  password: ${P}\n")
    assert cli.literal_secrets(text, "f.yaml") == [
        "f.yaml:2:13: password: a secret written out; name it as ${VAR}, set on the "
        "gateway: secrets never travel",
    ]


def test_prepare_refuses_a_config_for_another_gateway(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("gateway: {id: gw-2}\nmqtt:\n  host: h\n  password: ${GW_PASS}\n"
                    "devices: []\n")
    text, problems = cli.prepare(str(path), "gw-1")
    assert text.startswith("gateway:")
    assert problems == [f"{path}: gateway.id is 'gw-2', not 'gw-1': a gateway refuses a "
                        "config for another id"]
    assert cli.prepare(str(path), "gw-2")[1] == []  # ${GW_PASS} is the gateway's business


RECORDS = {
    "gw-b": {"state": "online", "ts": 10 * 10**9, "version": "0.1.0",
             "config": {"sha256": "0123456789abcdef"}, "devices": {"total": 3,
                                                                   "failing": ["d2"]},
             "outbox": {"pending": 120, "oldest_s": 90, "dropped": 4}},
    "gw-a": {"state": "offline", "ts": 5 * 10**9},
}


def test_status_filters() -> None:
    assert list(cli.select(RECORDS, [], None, False)) == ["gw-a", "gw-b"]
    assert list(cli.select(RECORDS, ["gw-b*"], None, False)) == ["gw-b"]
    assert list(cli.select(RECORDS, [], "offline", False)) == ["gw-a"]
    assert list(cli.select(RECORDS, [], None, True)) == ["gw-b"]


def test_status_table() -> None:
    lines = cli.table(cli.select(RECORDS, [], None, False), 70 * 10**9)
    assert lines == [
        "GATEWAY  STATE    VERSION  CONFIG        DEVICES  FAILING  BACKLOG               "
        "LAST SEEN",
        "gw-a     offline  -        -             -        -        -                     "
        "65s ago",
        "gw-b     online   0.1.0    0123456789ab  3        d2       120 (90s), 4 dropped  "
        "1m ago",
    ]


def test_broker_option() -> None:
    assert cli.parse_broker("broker.example.org") == ("broker.example.org", 1883)
    assert cli.parse_broker("10.0.0.1:8883") == ("10.0.0.1", 8883)
    with pytest.raises(ValueError, match="bad port"):
        cli.parse_broker("h:0")


def test_fleet_command_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.commands.cli import main

    with pytest.raises(SystemExit) as exit_:  # no --key: argparse's usage error
        main(["fleet", "command", "gw-1", "vms-3", "dim_pct=40"])
    assert exit_.value.code == 2
    assert main(["fleet", "command", "--key", str(tmp_path / "none"), "gw-1", "vms-3",
                 "dim_pct"]) == 2
    assert "'dim_pct' is not POINT=VALUE" in capsys.readouterr().err
    assert main(["fleet", "command", "--key", str(tmp_path / "none"), "gw-1", "vms-3",
                 "dim_pct=40"]) == 2  # the key cannot be read: nothing sent


def test_fleet_keygen_and_push_usage_errors(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.commands.cli import main

    key = tmp_path / "key"
    assert main(["fleet", "keygen", str(key)]) == 0
    assert "public_key: " in capsys.readouterr().out
    assert main(["fleet", "keygen", str(key)]) == 2  # never overwritten
    assert main(["fleet", "push", "--key", str(tmp_path / "none"), "gw-1", "f.yaml"]) == 2
    assert "cannot read key" in capsys.readouterr().err
    bad = tmp_path / "gw.yaml"
    bad.write_text("gateway: {id: gw-1}\nmqtt: {host: h, qos: 7}\ndevices: []\n")
    assert main(["fleet", "push", "--key", str(key), "gw-1", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2:" in err and "nothing pushed" in err
    with pytest.raises(SystemExit) as exit_:
        main(["fleet", "status", "--broker", "h:0"])
    assert exit_.value.code == 2


def test_fleet_status_without_a_broker_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.commands.cli import main
    from tests.support.ports import free_port

    port = free_port()  # nothing listens there
    assert main(["fleet", "status", "--broker", f"127.0.0.1:{port}"]) == 1
    assert capsys.readouterr().err.startswith(f"cannot reach the broker at 127.0.0.1:{port}: ")
    assert main(["fleet", "status", "--broker", f"127.0.0.1:{port}", "--ca-file",
                 str(tmp_path / "missing.pem")]) == 1
    assert "cannot reach the broker" in capsys.readouterr().err
