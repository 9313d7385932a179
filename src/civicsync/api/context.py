"""What every request handler needs: the config, the running service's state, database sessions."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from fastapi import Request

from civicsync.config import LoadedConfig
from civicsync.config.service import Api
from civicsync.db.connect import connect
from civicsync.db.errors import mapped_errors
from civicsync.runtime.state import ServiceState

Conn = psycopg.Connection[tuple[Any, ...]]


@dataclass
class ApiContext:
    """Shared by every request of one app (``app.state.civicsync``)."""

    config: LoadedConfig
    state: ServiceState | None = None
    replay_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def settings(self) -> Api:
        """The ``service.api`` section of the config."""
        return self.config.model.service.api

    @contextmanager
    def database(self, purpose: str, connection: str | None = None) -> Iterator[Conn]:
        """A session on ``connection`` (default: the API's own) for one request; closed afterwards.

        Every psycopg error inside becomes civicsync's (a lost or refused connection is a
        :class:`~civicsync.errors.DatabaseUnavailableError`, answered with 503). Nothing is
        committed unless the caller commits (or uses ``conn.transaction()``).
        """
        name = connection or self.settings.connection
        with mapped_errors(f"{purpose} in the {name} database"), \
                connect(self.config.dsn(name), purpose=f"api:{purpose}", label=name) as conn:
            yield conn


def context(request: Request) -> ApiContext:
    """The app's :class:`ApiContext` (a FastAPI dependency)."""
    ctx = request.app.state.civicsync
    assert isinstance(ctx, ApiContext)
    return ctx
