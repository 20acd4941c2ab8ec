"""Observability: hooks and middleware around jobs and calls (``hooks``), and the
middleware we ship: Prometheus metrics, OpenTelemetry spans, structured logging."""
