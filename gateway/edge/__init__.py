"""The edge daemon (`sensegate run`): scheduler, outbox, publisher, daemon."""
