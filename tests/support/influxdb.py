"""A real InfluxDB 1.x (`influxd`) on free loopback ports, owned by a test.

Meta, data and WAL live in a temp dir; the HTTP API (`/write`, `/query`) and the RPC
bind address both take free loopback ports. `stop()` and `start()` make real outages and
keep the data dir, so points written before an outage are still there after it.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from tests.support.ports import free_port
from tests.support.server import ServerProcess

INFLUXD = shutil.which("influxd") or "/usr/bin/influxd"


class InfluxDB(ServerProcess):
    log_name = "influxd.log"

    def __init__(self, *, database: str = "sensing", auth: tuple[str, str] | None = None,
                 create: bool = True) -> None:
        super().__init__("sensegate-influx-")
        self.port = free_port()
        self.rpc_port = free_port()
        self.database = database
        self.auth = auth
        self.conf = self.dir / "influxdb.conf"
        self.conf.write_text(
            "\n".join(
                [
                    "reporting-disabled = true",
                    f'bind-address = "127.0.0.1:{self.rpc_port}"',
                    "[meta]",
                    f'  dir = "{self.dir}/meta"',
                    "  logging-enabled = false",
                    "[data]",
                    f'  dir = "{self.dir}/data"',
                    f'  wal-dir = "{self.dir}/wal"',
                    "  query-log-enabled = false",
                    "[monitor]",
                    "  store-enabled = false",
                    "[http]",
                    f'  bind-address = "127.0.0.1:{self.port}"',
                    "  log-enabled = false",
                    f"  auth-enabled = {'true' if auth else 'false'}",
                    "[continuous_queries]",
                    "  enabled = false",
                    "",
                ]
            )
        )
        self._created = not create  # create=False: no user, no database (the test's job)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [INFLUXD, "-config", str(self.conf)]

    def wait_ready(self) -> None:
        self.wait_http(f"{self.url}/ping", 204)

    def after_start(self) -> None:
        if self._created:
            return
        if self.auth:
            user, password = self.auth
            self.query(
                f"CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES",
                post=True, use_auth=False,
            )
        self.query(f'CREATE DATABASE "{self.database}"', post=True)
        self._created = True

    # -- HTTP helpers ------------------------------------------------------------------

    def _params(self, extra: dict[str, str], use_auth: bool = True) -> str:
        params = dict(extra)
        if self.auth and use_auth:
            params["u"], params["p"] = self.auth
        return urllib.parse.urlencode(params)

    def query(self, q: str, *, post: bool = False, use_auth: bool = True) -> dict[str, Any]:
        params = self._params({"q": q, "db": self.database, "epoch": "ns"}, use_auth)
        if post:
            req = urllib.request.Request(
                f"{self.url}/query", data=params.encode(), method="POST",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        else:
            req = urllib.request.Request(f"{self.url}/query?{params}")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def write(self, body: bytes) -> int:
        params = self._params({"db": self.database, "precision": "ns"})
        req = urllib.request.Request(f"{self.url}/write?{params}", data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def rows(self, q: str) -> list[dict[str, Any]]:
        """Every row of every series of a SELECT, as dicts (tags merged in)."""
        out: list[dict[str, Any]] = []
        for result in self.query(q).get("results", []):
            if "error" in result:
                raise RuntimeError(result["error"])
            for series in result.get("series", []):
                tags = series.get("tags", {})
                for values in series["values"]:
                    row = dict(zip(series["columns"], values, strict=True))
                    row.update(tags)
                    row["_measurement"] = series["name"]
                    out.append(row)
        return out

    def series(self) -> list[str]:
        """Every series key (`measurement,tag=value,...`) in the database."""
        keys: list[str] = []
        for result in self.query("SHOW SERIES").get("results", []):
            for series in result.get("series", []):
                keys.extend(v[0] for v in series["values"])
        return sorted(keys)

    def count(self, measurement: str, field: str) -> int:
        rows = self.rows(f'SELECT count("{field}") FROM "{measurement}"')
        return int(rows[0]["count"]) if rows else 0
