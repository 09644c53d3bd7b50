"""The technician's page (SPEC §9): what the gateway sees, read-only, in a browser.

- `journal`: what is kept between scans (last raw registers, recent errors, warnings);
- `view`: pure, a snapshot of the daemon's state -> rows of text;
- `render`: pure, views -> escaped HTML and the refreshable cells;
- `routes`: the HTTP routes served by gateway/runtime/http.py.

Templates and static files are package data beside the code: no CDN, no internet.
"""

from .journal import ScanJournal, WarningLog
from .routes import page_routes
from .view import BrokerState, ConfigFacts, DeviceCounters, OutboxState, PageState, config_facts

__all__ = ["BrokerState", "ConfigFacts", "DeviceCounters", "OutboxState", "PageState",
           "ScanJournal", "WarningLog", "config_facts", "page_routes"]
