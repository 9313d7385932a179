"""civicsync's HTTP API (FastAPI): ML callbacks F9/F10, health, readiness, status, dead-letter admin,
Prometheus metrics and the operator status page. :func:`civicsync.api.app.create_app` builds it;
:class:`civicsync.api.server.ApiServer` serves it from a thread."""
