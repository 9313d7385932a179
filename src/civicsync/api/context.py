"""What every request handler needs: the config, the running service's state, database sessions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import psycopg
from fastapi import Request
from psycopg_pool import ConnectionPool

from civicsync.config import LoadedConfig
from civicsync.config.service import Api
from civicsync.db.connect import connect, session_kwargs
from civicsync.db.errors import mapped_errors
from civicsync.runtime.state import ServiceState

Conn = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")


@dataclass
class ApiContext:
    """Shared by every request of one app (``app.state.civicsync``)."""

    config: LoadedConfig
    state: ServiceState | None = None
    replay_lock: threading.Lock = field(default_factory=threading.Lock)
    status_cache: TtlCache = field(init=False)
    _pool: ConnectionPool[Conn] | None = field(default=None, init=False)
    _pool_lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.status_cache = TtlCache(self.settings.status_cache_seconds)

    @property
    def settings(self) -> Api:
        """The ``service.api`` section of the config."""
        return self.config.model.service.api

    @contextmanager
    def database(self, purpose: str, connection: str | None = None) -> Iterator[Conn]:
        """A session on ``connection`` (default: the API's own) for one request.

        The API's own connection comes from the pool (``service.api.pool``): a session is checked
        before it is handed out, and whatever the request left open is committed (or rolled back on an
        error) when it goes back. Others are opened for the request and closed afterwards; nothing is
        committed there unless the caller commits (or uses ``conn.transaction()``). Every psycopg error
        inside becomes civicsync's (a lost or refused connection, or no pooled session within the pool's
        timeout, is a :class:`~civicsync.errors.DatabaseUnavailableError`, answered with 503).
        """
        name = connection or self.settings.connection
        with mapped_errors(f"{purpose} in the {name} database"):
            if name == self.settings.connection:
                with self.pool().connection(timeout=self.settings.pool.timeout_seconds) as conn:
                    yield conn
            else:
                with connect(self.config.dsn(name), purpose=f"api:{purpose}", label=name) as conn:
                    yield conn

    def pool(self) -> ConnectionPool[Conn]:
        """The API connection's pool, opened on first use (so building the app connects nowhere)."""
        with self._pool_lock:
            if self._pool is None:
                dsn = self.config.dsn(self.settings.connection, "api")  # the API role's, where declared
                sizes = self.settings.pool
                self._pool = ConnectionPool(dsn, min_size=sizes.min_size, max_size=sizes.max_size,
                                            kwargs=session_kwargs(dsn, "api"), open=False, name="civicsync-api",
                                            timeout=sizes.timeout_seconds, check=ConnectionPool.check_connection,
                                            # Give up a reconnection attempt as soon as a request would: its
                                            # backoff then never outlasts an outage by more than that (the
                                            # next request starts a fresh attempt at once).
                                            reconnect_timeout=sizes.timeout_seconds)
                self._pool.open(wait=False)
            return self._pool

    def close(self) -> None:
        """Close the pool's sessions (the server calls this when it stops)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


class TtlCache:
    """One value per key, rebuilt at most every ``seconds``. While one caller rebuilds a stale value the
    others get the stale one at once (it is at most one rebuild older) rather than queueing behind the
    rebuild; only the very first build of a key is waited for. The status report reads both databases:
    under load, rebuilding it per request (or making requests wait for it) is what made it slow."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._building = threading.Lock()
        self._values: dict[Hashable, tuple[float, Any]] = {}

    def _fresh(self, key: Hashable) -> tuple[bool, tuple[float, Any] | None]:
        found = self._values.get(key)
        return found is not None and time.monotonic() - found[0] < self.seconds, found

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        """The cached value of ``key`` (see the class); an error while building is raised, not cached."""
        if self.seconds <= 0:
            return build()
        fresh, found = self._fresh(key)
        if fresh and found is not None:
            return cast(T, found[1])
        if not self._building.acquire(blocking=found is None):
            assert found is not None
            return cast(T, found[1])  # someone is rebuilding it: the stale value now beats a wait
        try:
            fresh, found = self._fresh(key)
            if fresh and found is not None:
                return cast(T, found[1])
            value = build()
            self._values[key] = (time.monotonic(), value)
            return value
        finally:
            self._building.release()


def context(request: Request) -> ApiContext:
    """The app's :class:`ApiContext` (a FastAPI dependency)."""
    ctx = request.app.state.civicsync
    assert isinstance(ctx, ApiContext)
    return ctx
