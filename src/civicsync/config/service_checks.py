"""Cross-checks of the ``service`` section against the rest of the config (run by the loader).

The API writes F9/F10 callbacks and keeps its keys in ``service.api.connection``: that connection
must be declared, or ``apikey create`` and every authenticated call would fail only at run time.
"""

from __future__ import annotations

from civicsync.config.models import Config

Problem = tuple[str, str]


def check_service(config: Config) -> list[Problem]:
    """Every problem of ``config.service`` that needs the rest of the config to see."""
    api = config.service.api
    if api.connection not in config.connections:
        return [("service.api.connection", f"connection {api.connection!r} is not declared "
                                           f"(declared: {', '.join(config.connections)})")]
    return []
