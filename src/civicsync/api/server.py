"""Serve an app with uvicorn on a background thread: the service (`civicsync run`) and the tests use it.

The thread installs no signal handlers (the service owns SIGTERM/SIGINT) and configures no logging
(the process does). The socket is bound in :meth:`ApiServer.start`, so a port in use fails there with
a clear error, and port 0 gives a free port, read back from :attr:`ApiServer.port`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from civicsync.config.service import Limits
from civicsync.errors import ApiServerError as ApiServerError  # re-exported: it lives in the one tree

log = logging.getLogger("civicsync.api")


class _ThreadServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the process that embeds it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _SlowClientGuard(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, plus a deadline for a request's headers: uvicorn waits forever for a
    client that sends half a request (its keep-alive timeout only runs between requests), so a few
    hundred such clients could hold every connection. The deadline runs from the connection's start and
    from the end of each response until the next request's headers are complete."""

    header_seconds = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not self._awaited:  # a request's headers arrived: the app has it now
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._awaited = self.cycle
        self._header_timer: asyncio.TimerHandle | None = self.loop.call_later(self.header_seconds, self._too_slow)

    def _disarm(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if self.cycle is self._awaited and not self.transport.is_closing():
            self.transport.close()


def _configured_limits(app: ASGIApp) -> Limits:
    """The limits of civicsync's app (``service.api.limits``), or the defaults for another app."""
    context = getattr(getattr(app, "state", None), "civicsync", None)
    settings = getattr(context, "settings", None)
    found = getattr(settings, "limits", None)
    return found if isinstance(found, Limits) else Limits()


def _guarded(header_seconds: float) -> type[H11Protocol]:
    return type("SlowClientGuard", (_SlowClientGuard,), {"header_seconds": header_seconds})


class ApiServer:
    """uvicorn serving ``app`` on ``host:port`` from a daemon thread.

    ``limits`` (``service.api.limits``) bound what clients may hold: open connections (more get 503 at
    once), idle keep-alive connections, and the time to send a request's headers (slow clients are cut).
    """

    def __init__(self, app: ASGIApp, host: str, port: int, *, graceful_seconds: float = 5.0,
                 limits: Limits | None = None) -> None:
        self.host = host
        self.port = port
        self.graceful_seconds = graceful_seconds
        limits = limits or _configured_limits(app)
        self._config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                      server_header=False, lifespan="off", http=_guarded(limits.request_header_seconds),
                                      limit_concurrency=limits.max_connections,
                                      timeout_keep_alive=max(1, round(limits.keep_alive_seconds)),
                                      timeout_graceful_shutdown=max(1, round(graceful_seconds)))
        # uvicorn's own access log prints the query string (where a careless client may put a key) and
        # runs whenever its logger has a handler; civicsync.api.access replaces it.
        logging.getLogger("uvicorn.access").disabled = True
        self._server = _ThreadServer(self._config)
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server, e.g. ``http://127.0.0.1:8787``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ApiServer:
        """Bind, start serving, and return once uvicorn is listening."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ApiServerError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from exc
        sock.set_inheritable(True)
        self._socket = sock
        self.port = int(sock.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, name=f"civicsync-api:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ApiServerError(f"the HTTP API did not start on {self.host}:{self.port}"
                                     + (f": {self._error}" if self._error else ""))
            time.sleep(0.01)
        log.info("HTTP API listening on %s", self.url)
        return self

    def _serve(self) -> None:
        try:
            assert self._socket is not None
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # SystemExit from uvicorn included: reported by start()
            self._error = exc
            log.error("HTTP API stopped: %r", exc)

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (at most ``graceful_seconds``), then return."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(self.graceful_seconds + 2)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(5)
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        context = getattr(getattr(self._config.app, "state", None), "civicsync", None)
        if context is not None and callable(getattr(context, "close", None)):
            context.close()  # the app's database pool

    @property
    def running(self) -> bool:
        """The server thread is serving."""
        return self._thread is not None and self._thread.is_alive() and bool(self._server.started)

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
