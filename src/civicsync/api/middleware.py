"""ASGI middleware: request metrics and the access log (outermost), and the body size limit.

Metrics are labelled by the route *template* (``/api/v1/dead-letters``, never a raw path with ids),
method and status; requests that match no route share the label ``unmatched``. The access log
(logger ``civicsync.api.access``) names the route, the status, the time taken and the key_id of
the caller's key, never the key or the query string.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from civicsync.metrics import API_LATENCY, API_REQUESTS

access_log = logging.getLogger("civicsync.api.access")
_KEYISH = re.compile(r"csk_([0-9a-f]{12})_\S*")


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    if route is not None and isinstance(getattr(route, "path", None), str):
        return str(route.path)
    app = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", []):
        match, _ = candidate.matches(scope)
        if match is not Match.NONE and isinstance(getattr(candidate, "path", None), str):
            return str(candidate.path)
    return "unmatched"


class RequestMetrics:
    """Count and time every HTTP request; write one access-log line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = str(scope["method"])
            API_REQUESTS.labels(route, method, str(status)).inc()
            API_LATENCY.labels(route, method).observe(elapsed)
            shown = route if route != "unmatched" else _KEYISH.sub(r"csk_\1_***", str(scope.get("path", "")))[:200]
            key_id = scope["state"].get("key_id") if isinstance(scope.get("state"), dict) else None
            access_log.info("%s %s %d %.1fms key=%s", method, shown, status, elapsed * 1000, key_id or "-")


class BodyLimit:
    """413 for request bodies over ``max_bytes``, at once from Content-Length or while reading a chunked
    body; 408 for a body not received within ``body_seconds`` (a client that sends its headers and then
    stalls). The body is buffered (at most ``max_bytes``) before the app sees it."""

    def __init__(self, app: ASGIApp, max_bytes: int, body_seconds: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_seconds = body_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send, int(declared))
            return
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.body_seconds
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                await self._refuse(send, 408, "request_timeout", f"request body not received within "
                                   f"{self.body_seconds:g} s", "body", "timeout")
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send, None)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send, declared: int | None) -> None:
        size = f"{declared} bytes" if declared is not None else "more than that"
        await self._refuse(send, 413, "payload_too_large", f"request body too large: at most {self.max_bytes} bytes "
                           f"({size} sent)", f"at most {self.max_bytes} bytes", "too_large")

    @staticmethod
    async def _refuse(send: Send, status: int, error: str, message: str, field_message: str, kind: str) -> None:
        body: dict[str, Any] = {"error": error, "message": message,
                                "fields": [{"field": "body", "message": field_message, "type": kind}]}
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": data})
