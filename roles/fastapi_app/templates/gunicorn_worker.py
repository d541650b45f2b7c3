# The worker class: uvicorn_worker.UvicornWorker, with two changes. (Included in
# gunicorn.conf.py by the fastapi_app role; plain Python, no template syntax.)
#
# 1. A graceful stop lets a connection it accepted just before send its request. Uvicorn,
#    once it stops accepting, closes at once every connection that has not sent a request
#    yet; a request already on its way then meets a reset, and nginx does not retry a POST
#    elsewhere (seen on the lab: one 502 in 1,004 requests while every app host restarted at
#    once). This worker stops accepting, waits until each such connection has sent its
#    request (at most ACCEPTED_GRACE_S), and then shuts down as uvicorn does.
#
# 2. Bounded work (Admission): at most `limit_concurrency` requests are taken in by a worker,
#    of which at most `max_running` run the app at once while the others wait their turn in
#    order of arrival (more at once than the cores and the database can take only slows every
#    one of them down); once the queue has not been empty for `queue_timeout` seconds, a new
#    request waits at most that long (then it is refused: a queue that stands is overload,
#    not a burst); a request that waited longer than `request_deadline` seconds since the
#    edge received it (nginx's X-Request-Start: t=<epoch seconds>) is not run at all. The
#    refused are answered with 503 and Retry-After, without calling the app. Offered more
#    than it can serve, the service then serves about its capacity and refuses the rest fast,
#    instead of queueing work for clients that have already given up. Lifespan and websocket
#    events pass through untouched; a request without the header (the health gate's on the
#    host, a monitoring probe's) is never refused, so a busy host still passes its gate. The
#    gunicorn.conf.py template sets both bounds on the class.
import asyncio
import sys
import time

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

ACCEPTED_GRACE_S = 1.0
REQUEST_START_HEADER = b"x-request-start"


def _request_start(headers):
    """The edge's arrival time (epoch seconds) from `t=1733580000.123` (nginx's ${msec}),
    or None when the header is missing or not a time."""
    for name, value in headers:
        if name == REQUEST_START_HEADER:
            text = value.decode("latin-1").strip()
            if text.startswith("t="):
                text = text[2:]
            try:
                return float(text)
            except ValueError:
                return None
    return None


class Admission:
    """An ASGI wrapper that refuses, with a fast 503, the requests this worker should not run."""

    def __init__(
        self,
        app,
        limit_concurrency=0,
        request_deadline=0.0,
        retry_after=1,
        max_running=0,
        queue_timeout=0.0,
    ):
        self.app = app
        self.limit_concurrency = int(limit_concurrency)
        self.request_deadline = float(request_deadline)
        self.retry_after = str(int(retry_after)).encode()
        self.max_running = int(max_running)
        self.queue_timeout = float(queue_timeout)
        self.in_flight = 0
        self._turns = None  # asyncio.Semaphore(max_running), made in the worker's loop
        self._waiting = 0  # requests waiting for their turn now
        self._queue_since = 0.0  # since when some have been (monotonic)

    def refusal(self, start):
        """Why this request is refused ("busy" or "late"), or None to run it. Only what the
        edge sends is bounded (it carries X-Request-Start): a health gate's or a monitoring
        probe's request on the app port is never refused for being one too many, so a busy
        host still tells "healthy" apart from "broken"."""
        if start is None:
            return None
        if self.limit_concurrency > 0 and self.in_flight >= self.limit_concurrency:
            return "busy"
        if self.request_deadline > 0 and time.time() - start > self.request_deadline:
            return "late"
        return None

    async def refuse(self, send, reason):
        body = b'{"detail":"Service Unavailable"}'
        await send({
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", self.retry_after),
                (b"x-refused", reason.encode()),
            ],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = _request_start(scope.get("headers", ()))
        reason = self.refusal(start)
        if reason is not None:
            await self.refuse(send, reason)
            return
        if start is None or self.max_running <= 0:  # not the edge's, or no turns to wait
            self.in_flight += 1
            try:
                await self.app(scope, receive, send)
            finally:
                self.in_flight -= 1
            return
        if self._turns is None:
            self._turns = asyncio.Semaphore(self.max_running)
        self.in_flight += 1
        now = time.monotonic()
        if self._waiting == 0:
            self._queue_since = now
        self._waiting += 1
        try:
            waits = {}  # the reason a wait that long ends in, by its length
            if self.request_deadline > 0:
                waits[max(0.0, self.request_deadline - (time.time() - start))] = "late"
            # A queue that has not been empty for queue_timeout stands: overload, and a new
            # request waits at most that long. A burst (every request a restart held, taken
            # in at once) queues too, but briefly: its requests wait for their turn.
            if self.queue_timeout > 0 and now - self._queue_since >= self.queue_timeout:
                waits.setdefault(self.queue_timeout, "busy")
            wait = min(waits) if waits else None
            try:
                async with asyncio.timeout(wait):
                    await self._turns.acquire()
            except TimeoutError:
                await self.refuse(send, waits[wait])  # its turn did not come in time
                return
            finally:
                self._waiting -= 1
            try:
                await self.app(scope, receive, send)
            finally:
                self._turns.release()
        finally:
            self.in_flight -= 1


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
    # Set by the role's gunicorn.conf.py (fastapi_app_limit_concurrency,
    # fastapi_app_request_deadline); 0 = no bound.
    limit_concurrency = 0
    request_deadline = 0.0
    retry_after = 1
    max_running = 0
    queue_timeout = 0.0

    async def _serve(self):
        self.config.app = Admission(
            self.wsgi,
            self.limit_concurrency,
            self.request_deadline,
            self.retry_after,
            self.max_running,
            self.queue_timeout,
        )
        server = _Server(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)


worker_class = Worker
