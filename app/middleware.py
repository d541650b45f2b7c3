"""Per-request context: request id, release header, access log line and metrics.

A plain ASGI middleware (not ``BaseHTTPMiddleware``): it sees the response's status and headers
as they are sent, keeps streaming intact, and adds nothing per chunk.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.logs import get_logger
from app.core.metrics import UNMATCHED_ROUTE, observe_request

REQUEST_ID_HEADER = "X-Request-ID"
RELEASE_HEADER = "X-App-Release"

# An incoming request id is kept only if it is a plain token (no spaces, quotes or control
# characters that could forge log fields or headers) of at most 128 characters.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

access_log = get_logger("app.access")


def request_id_from(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate: str = bytes(value).decode("latin-1")
            if _SANE_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/notes/{note_id}``), never the raw path."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


def _release(scope: Scope) -> str:
    app = scope.get("app")
    settings = getattr(getattr(app, "state", None), "settings", None)
    release = getattr(settings, "app_release", None)
    return release if isinstance(release, str) else "unknown"


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        request_id = request_id_from(scope)
        release = _release(scope)
        status_code = 500
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status_code, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_code = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                headers[RELEASE_HEADER] = release
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            # Unhandled: answer 500 here so this response carries the headers too, then let
            # the error propagate for the server to log its traceback.
            if not response_started:
                await send_with_headers(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send(
                    {"type": "http.response.body", "body": b'{"detail":"Internal Server Error"}'}
                )
            raise
        finally:
            duration = time.perf_counter() - started
            route = route_template(scope)
            method = scope["method"]
            observe_request(method, route, status_code, duration)
            access_log.info(
                "request",
                method=method,
                path=scope["path"],
                route=route,
                status=status_code,
                duration_ms=round(duration * 1000, 3),
                release=release,
            )
            structlog.contextvars.unbind_contextvars("request_id")
