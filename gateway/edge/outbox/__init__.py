"""The durable offline buffer (outbox): SQLite in WAL mode under ``gateway.state_dir``.

One module per concern:

* `format`: the file's identity and format version, the migrations, the opening pragmas;
* `chunks`: how one commit's readings are encoded in a ``chunks`` row (pure);
* `store`: `Outbox`, the queue, committer, take/ack state machine and the size bound;
* `status`: `sensegate outbox`, read beside a running daemon, and its printing.

docs/outbox.md has the durability argument in full.
"""

from gateway.edge.outbox.format import APPLICATION_ID, DB_NAME, FORMAT_VERSION
from gateway.edge.outbox.status import print_status, read_status
from gateway.edge.outbox.store import Outbox, OutboxMessage, OutboxStats

__all__ = [
    "APPLICATION_ID",
    "DB_NAME",
    "FORMAT_VERSION",
    "Outbox",
    "OutboxMessage",
    "OutboxStats",
    "print_status",
    "read_status",
]
