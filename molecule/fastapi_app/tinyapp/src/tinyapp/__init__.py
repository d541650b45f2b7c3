"""A bare ASGI app: proves fastapi_app deploys any ASGI callable, not only FastAPI."""

import json
import os
from importlib.metadata import version


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/health":
        status, body = 200, {"status": "ok", "release": os.environ.get("APP_RELEASE", "")}
    else:
        status, body = (
            200,
            {
                "hello": os.environ.get("TINYAPP_GREETING", "world"),
                "client": scope["client"][0] if scope.get("client") else None,
                "scheme": scope.get("scheme"),
                "anyio": version("anyio"),
            },
        )
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload})
