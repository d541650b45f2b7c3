# The worker class: uvicorn_worker.UvicornWorker, except that a graceful stop lets a
# connection it accepted just before send its request. Uvicorn, once it stops accepting,
# closes at once every connection that has not sent a request yet; a request already on its
# way then meets a reset, and nginx does not retry a POST elsewhere (seen on the lab: one
# 502 in 1,004 requests while every app host restarted at once). This worker stops
# accepting, waits until each such connection has sent its request (at most
# ACCEPTED_GRACE_S), and then shuts down as uvicorn does: those requests are served.
# (Included in gunicorn.conf.py by the fastapi_app role; plain Python, no template syntax.)
import asyncio
import sys
import time

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

ACCEPTED_GRACE_S = 1.0


class _Server(Server):
    async def shutdown(self, sockets=None):
        for server in self.servers:
            server.close()
        deadline = time.monotonic() + ACCEPTED_GRACE_S
        # Polled: the connections are uvicorn's, with no event to wait on.
        while time.monotonic() < deadline and any(  # noqa: ASYNC110
            getattr(connection, "cycle", True) is None
            for connection in self.server_state.connections
        ):
            await asyncio.sleep(0.01)
        await super().shutdown(sockets)


class Worker(UvicornWorker):
    async def _serve(self):
        self.config.app = self.wsgi
        server = _Server(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)


worker_class = Worker
