"""The documentation cannot drift from the code and the shipped configs.

- docs/config-reference.md is exactly what docs/gen_config_reference.py generates from
  gateway.config.schema.
- The Grafana dashboard parses, has `gateway` and `device` variables, and every query names
  only measurements, fields and tags that the shipped example sites and profiles produce;
  the measurements `sensegate demo` writes are read too.
- Every doc page README.md links to exists, and every relative link inside docs/ resolves.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
DASHBOARD = DOCS / "grafana" / "sensegate-dashboard.json"


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def demo_site() -> dict:
    """The config `sensegate demo` runs (ports and paths do not matter here)."""
    from gateway.sim.demo import gateway_yaml

    ports = dict.fromkeys(("rws-1", "traffic-1", "meter-1"), 502)
    return yaml.safe_load(gateway_yaml("/tmp/state", 1883, ports, "/dev/a", "/dev/b"))


def shipped_series() -> tuple[dict[str, set[str]], set[str]]:
    """Measurement -> field names, and every tag key, of the example sites under config/ and
    of the demo."""
    fields: dict[str, set[str]] = {}
    tags = {"gateway", "device"}
    sites = [_yaml(site) for site in sorted((ROOT / "config").glob("site-*.yaml"))]
    for doc in [*sites, demo_site()]:
        tags |= set(doc["gateway"].get("tags") or {})
        for device in doc["devices"]:
            tags |= set(device.get("tags") or {})
            points = [p["name"] for p in device.get("points") or []]
            if device.get("profile"):
                profile = _yaml(ROOT / "gateway" / "config" / "sensor_profiles"
                                / f"{device['profile']}.yaml")
                points += [p["name"] for p in profile["points"]]
            measurement = device.get("measurement") or device["name"]
            fields.setdefault(measurement, set()).update(points)
    return fields, tags


def dashboard_queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [
        target["query"]
        for panel in doc["panels"]
        for target in panel.get("targets", [])
    ]


def test_dashboard_is_a_grafana_dashboard_on_influxql() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["title"] and doc["uid"] and doc["schemaVersion"] >= 30
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert set(variables) >= {"gateway", "device"}
    assert 'WITH KEY = "gateway"' in variables["gateway"]["query"]
    assert 'WITH KEY = "device"' in variables["device"]["query"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["type"] == "influxdb"
        for target in panel["targets"]:
            assert target["rawQuery"] is True
            assert "$timeFilter" in target["query"]
            assert '"gateway" =~ /^$gateway$/' in target["query"]
            assert '"device" =~ /^$device$/' in target["query"]


def read_measurements(query: str, fields: dict[str, set[str]]) -> list[str]:
    """The shipped measurements a query reads: ``FROM "name"`` or ``FROM /regex/``."""
    m = re.search(r'FROM (?:"([^"]+)"|/([^/]+)/)', query)
    assert m is not None, query
    if m.group(1):
        return [m.group(1)] if m.group(1) in fields else []
    return [name for name in fields if re.search(m.group(2), name)]


def test_dashboard_reads_what_the_demo_writes() -> None:
    fields, _tags = shipped_series()
    read = {name for query in dashboard_queries() for name in read_measurements(query, fields)}
    demo = {d.get("measurement") or d["name"] for d in demo_site()["devices"]}
    assert demo - read == {"traffic"}  # no panel for the demo's traffic counter


@pytest.mark.parametrize("query", dashboard_queries())
def test_dashboard_query_names_real_measurements_fields_and_tags(query: str) -> None:
    fields, tags = shipped_series()
    measurements = read_measurements(query, fields)
    assert measurements, f"no example device writes what {query!r} reads"
    select = query.split(" FROM ", 1)[0]
    for field in re.findall(r'\("([^"]+)"\)', select):
        for measurement in measurements:
            assert field in fields[measurement], f"{measurement!r} has no field {field!r}"
    where_and_group = query.split(" FROM ", 1)[1]
    for tag in re.findall(r'"([^"]+)"\s*(?:=~|=|!=|!~)', where_and_group):
        assert tag in tags, f"{tag!r} is not a tag"
    group_by = where_and_group.partition("GROUP BY")[2]
    for tag in re.findall(r'"([^"]+)"', group_by):
        assert tag in tags, f"GROUP BY {tag!r} is not a tag"


def test_operations_lists_every_metric() -> None:
    from gateway.runtime import metrics

    text = (DOCS / "operations.md").read_text()
    for registry in (metrics.GatewayMetrics().registry, metrics.BridgeMetrics().registry):
        for family in registry.collect():
            name = family.name + ("_total" if family.type == "counter" else "")
            assert f"`{name}`" in text, f"docs/operations.md does not list {name}"


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_readme_documentation_links_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.partition("## Documentation")[2]
    links = LINK.findall(section)
    assert links
    for link in links:
        assert (ROOT / link).exists(), link


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_relative_links_in_docs_resolve(page: Path) -> None:
    for link in LINK.findall(page.read_text()):
        if "://" in link or link.startswith("mailto:"):
            continue
        assert (page.parent / link).exists(), f"{page.name}: broken link {link}"


def test_config_reference_is_generated_from_the_schema() -> None:
    script = DOCS / "gen_config_reference.py"
    if not script.exists():
        pytest.fail("docs/gen_config_reference.py is missing")
    proc = subprocess.run(
        [sys.executable, str(script), "--stdout"],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=60,
    )
    committed = (DOCS / "config-reference.md").read_text()
    assert proc.stdout == committed, (
        "docs/config-reference.md is stale: run python docs/gen_config_reference.py"
    )
