"""The technician's page as HTML: server-rendered, escaped, readable without JavaScript.

Pure: views in (gateway/edge/page/view.py), text out. Every text from a view goes through
`html.escape` here and nowhere else. The parts of a page that change between refreshes
are *cells*: elements with an id whose inner HTML `Rendered.cells` also carries, so the
page's script (static/page.js) refreshes them from a small JSON answer (``?cells=1``) made
by this same code; when ``layout`` changes (devices added or removed by a reload) the
script loads the whole page again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from string import Template
from urllib.parse import quote

from .view import DeviceRow, DeviceView, Fact, MainView

# Package data beside this file (importlib.resources would add 1.5 MiB of imports to every
# gateway for the same two reads; the package is never imported from a zip).
_HERE = os.path.dirname(os.path.abspath(__file__))


def _read(*parts: str) -> bytes:
    with open(os.path.join(_HERE, *parts), "rb") as f:
        return f.read()


LAYOUT = Template(_read("layout.html").decode("utf-8"))


def static_file(name: str) -> bytes:
    """The bytes of ``static/NAME`` (the page's CSS and script), read from the package."""
    return _read("static", name)


@dataclass(slots=True)
class Cells:
    """Collects the refreshable parts of a page, numbered in render order."""

    items: dict[str, str] = field(default_factory=dict)

    def put(self, tag: str, inner: str, attrs: str = "") -> str:
        cell_id = f"c{len(self.items)}"
        self.items[cell_id] = inner
        return f'<{tag} id="{cell_id}"{attrs}>{inner}</{tag}>'


@dataclass(frozen=True, slots=True)
class Rendered:
    html: str
    cells: dict[str, str]
    layout: str

    def cells_json(self) -> bytes:
        return json.dumps({"layout": self.layout, "cells": self.cells},
                          ensure_ascii=False, separators=(",", ":")).encode("utf-8")


_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
                          "'": "&#x27;"})


def e(text: object) -> str:
    """``text`` escaped for HTML text and quoted attributes (as ``html.escape``, whose
    module would load the 2,000-entry entity table into every gateway)."""
    return str(text).translate(_ESCAPES)


def device_href(name: str) -> str:
    return "/devices/" + quote(name, safe="")


def _state(text: str, cls: str) -> str:
    return f'<span class="st {e(cls)}">{e(text)}</span>' if cls else e(text)


def _facts(facts: tuple[Fact, ...]) -> str:
    out = []
    for fact in facts:
        title = f' title="{e(fact.title)}"' if fact.title else ""
        out.append(f"<div><dt>{e(fact.label)}</dt><dd{title}>{_state(fact.text, fact.cls)}"
                   "</dd></div>")
    return "".join(out)


def _device_rows(rows: tuple[DeviceRow, ...]) -> str:
    out = []
    for r in rows:
        error = ""
        if r.last_error:
            error = f'<span class="err">{e(r.last_error)}</span>'
            if r.last_meaning:
                error += f'<small class="why">{e(r.last_meaning)}</small>'
        # No per-cell attributes: column labels and alignment come from the CSS (nth-child),
        # which keeps a 100-device table well inside the page's weight budget.
        out.append(
            f'<tr><td><a href="{e(device_href(r.name))}">{e(r.name)}</a>'
            f"<small>{e(r.driver)} · {e(r.where)}</small></td>"
            f"<td>{_state(r.state, r.cls)}</td><td>{e(r.last_good)}</td>"
            f"<td>{r.errors_hour}</td><td>{error or '—'}</td><td>{e(r.requests)}</td>"
            f"<td>{e(r.response)}</td></tr>"
        )
    return "".join(out) or '<tr><td colspan="7">no devices configured</td></tr>'


def _page(title: str, heading: str, body: str, layout: str, refresh: float,
          version: str) -> str:
    return LAYOUT.substitute(
        title=e(title), heading=heading, body=body, layout=e(layout),
        refresh_ms=str(int(refresh * 1000)), noscript_refresh=str(max(5, int(refresh * 5))),
        version=e(version),
    )


def render_main(view: MainView, version: str) -> Rendered:
    cells = Cells()
    parts = [
        '<section id="gateway"><h2>Gateway</h2>',
        cells.put("dl", _facts(view.facts), ' class="facts"'),
        "</section>",
        '<section id="devices"><h2>Devices</h2><div class="scroll"><table class="devices">'
        "<thead><tr><th>device</th><th>state</th><th>last good scan</th>"
        "<th>errors, 1 h</th><th>last error</th><th>requests/scan</th><th>response</th>"
        "</tr></thead>",
        cells.put("tbody", _device_rows(view.devices)),
        "</table></div></section>",
    ]
    if view.buses:
        rows = "".join(
            f'<tr><td data-label="bus">{e(b.name)}<small>{e(b.port)}</small></td>'
            f'<td data-label="devices" class="num">{b.devices}</td>'
            f'<td data-label="estimated" class="num">{_state(b.estimated, b.cls)}</td>'
            f'<td data-label="measured" class="num">{e(b.measured)}</td></tr>'
            for b in view.buses
        )
        parts += [
            '<section id="buses"><h2>RS-485 buses</h2><div class="scroll"><table class="narrow">'
            "<thead><tr><th>bus</th><th>devices</th><th>utilisation (estimated)</th>"
            "<th>utilisation (measured)</th></tr></thead>",
            cells.put("tbody", rows),
            "</table></div></section>",
        ]
    groups = []
    for group in view.values:
        rows = "".join(
            f"<tr><td>{e(v.point)}</td><td>{e(v.text)}</td><td>{e(v.unit)}</td>"
            f"<td>{_state(v.quality, _quality_class(v.quality))}</td></tr>"
            for v in group.values
        )
        groups.append(
            f'<div class="card"><h3><a href="{e(device_href(group.device))}">'
            f"{e(group.device)}</a></h3><table>{rows}</table></div>"
        )
    more = ""
    if view.values_left_out:
        more = (f'<p class="note">{view.values_left_out} more points: see the device '
                "pages.</p>")
    parts += [
        '<section id="values"><h2>Live values</h2>',
        cells.put("div", "".join(groups) or "<p>no points</p>", ' class="cards"'),
        more,
        "</section>",
    ]
    warnings = "".join(
        f'<tr><td class="time">{e(w.at)}</td><td>{_state(w.level, _level_class(w.level))}'
        f'</td><td class="wide">{e(w.message)}</td></tr>'
        for w in view.warnings
    ) or '<tr><td colspan="3">no warnings</td></tr>'
    parts += [
        '<section id="warnings"><h2>Recent warnings</h2><div class="scroll"><table>',
        cells.put("tbody", warnings),
        "</table></div></section>",
    ]
    html = _page(f"{view.gateway_id} · sensegate", e(view.gateway_id), "".join(parts),
                 view.layout, view.refresh, version)
    return Rendered(html, cells.items, view.layout)


def _quality_class(quality: str) -> str:
    return {"good": "ok", "invalid": "warn", "bad": "bad"}.get(quality, "idle")


def _level_class(level: str) -> str:
    return "warn" if level == "WARNING" else "bad"


def render_device(view: DeviceView, version: str) -> Rendered:
    cells = Cells()
    orders = view.byte_orders
    head = "".join(f"<th>{e(o)}</th>" for o in orders)
    rows = []
    for p in view.points:
        by_order = dict(p.orders)
        order_cells = "".join(
            f'<td data-label="{e(o)}" class="num{" mine" if o == p.byte_order else ""}">'
            f"{e(by_order.get(o, '—'))}</td>"
            for o in orders
        ) if p.orders else f'<td colspan="{len(orders)}" class="na">—</td>'
        rows.append(
            f'<tr><td data-label="point">{e(p.name)}<small>{e(p.location)} · {e(p.type)}'
            "</small></td>"
            f'<td data-label="raw" class="raw">{e(p.raw)}</td>'
            f'<td data-label="value" class="num">{e(p.value)}</td>'
            f'<td data-label="unit">{e(p.unit)}</td>'
            f'<td data-label="quality">{_state(p.quality, _quality_class(p.quality))}</td>'
            f"{order_cells}</tr>"
        )
    errors = "".join(
        f'<tr><td class="time">{e(x.at)}</td><td>{e(x.kind)}</td>'
        f'<td class="wide"><span class="err">{e(x.message)}</span>'
        f'{f"<small class=why>{e(x.meaning)}</small>" if x.meaning else ""}</td></tr>'
        for x in view.errors
    ) or '<tr><td colspan="3">no errors since the gateway started</td></tr>'
    raw_at = f"registers read at {e(view.raw_at)}" if view.raw_at else "not read yet"
    body = "".join([
        '<p class="back"><a href="/">← all devices</a></p>',
        '<section id="device"><h2>Device</h2>',
        cells.put("dl", _facts(view.facts), ' class="facts"'),
        "</section>",
        '<section id="points"><h2>Points: raw registers and decoded values</h2>',
        cells.put("p", raw_at, ' class="note"'),
        '<div class="scroll"><table class="points"><thead><tr><th>point</th><th>raw</th>'
        f"<th>value</th><th>unit</th><th>quality</th>{head}</tr></thead>",
        cells.put("tbody", "".join(rows) or '<tr><td colspan="5">no points</td></tr>'),
        "</table></div>",
        '<p class="note">The last columns decode the same registers under every byte order '
        "(as <code>sensegate read --all-orders</code>); the configured one is marked.</p>",
        "</section>",
        '<section id="errors"><h2>Recent errors</h2><div class="scroll"><table>',
        cells.put("tbody", errors),
        "</table></div></section>",
    ])
    heading = f'<a href="/">{e(view.gateway_id)}</a> / {e(view.name)}'
    html = _page(f"{view.name} · {view.gateway_id} · sensegate", heading, body, view.layout,
                 view.refresh, version)
    return Rendered(html, cells.items, view.layout)
