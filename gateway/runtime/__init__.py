"""What both processes run on: lifecycle, systemd, HTTP and metrics, logs, TLS, backoff."""
