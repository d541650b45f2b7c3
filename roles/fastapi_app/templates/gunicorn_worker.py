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
#    order of arrival (more at once than the cores and the database pool can take only slows
#    every one of them down). A request waits for its turn until `queue_timeout` seconds
#    after the edge sent it (nginx's X-Request-Start: t=<epoch seconds>), then it is refused:
#    the worker is behind by more than that, which is overload, not a burst. The exception is
#    what the edge sent before the worker took in its first request: that waited in the
#    socket's backlog while the worker (re)started, the burst a restart held, and only its
#    deadline bounds it; what comes behind that burst counts its queue_timeout from when the
#    last of the burst got its turn (a request sent 0.1 s after the restart would otherwise
#    be refused for the seconds the burst takes: seen once in 1,226 when every app host
#    restarted at once at 50/s). A request that waited longer than `request_deadline` seconds since
#    the edge sent it is not run at all. The refused are answered with 503 and Retry-After,
#    without calling the app. Offered more than it can serve, the service then serves about
#    its capacity and refuses the rest fast, instead of queueing work for clients that have
#    already given up. Lifespan and websocket events pass through untouched; a request
#    without the header (the health gate's on the host, a monitoring probe's) is never
#    refused, so a busy host still passes its gate. Both times compare the edge's clock with
#    the app host's: they must agree to well under queue_timeout (the base role runs time
#    sync). A turn is held for the whole response: a streaming one (server-sent events, a
#    long poll) holds it while it streams. The gunicorn.conf.py template sets the bounds on
#    the class.
import asyncio
import sys
import time

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

ACCEPTED_GRACE_S = 1.0
# How often a request behind a restart's backlog looks whether the backlog had its turns.
BACKLOG_POLL_S = 0.05
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
        self._first = None  # when this worker took in its first request from the edge (epoch)
        self._backlog_in = 0  # requests sent before _first taken in, and those through
        self._backlog_out = 0  # their wait (turn or refusal), in order of arrival

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
        try:
            reason = await self.wait_turn(start)
            if reason is not None:  # its turn did not come in time
                await self.refuse(send, reason)
                return
            try:
                await self.app(scope, receive, send)
            finally:
                self._turns.release()
        finally:
            self.in_flight -= 1

    async def wait_turn(self, start):
        """Wait for a turn: None once it has one, or why it is refused ("late", "busy").
        The deadline bounds every wait. queue_timeout bounds the wait of what the edge sent
        once this worker was serving, counted from when the edge sent it, or, when backlog
        requests (sent before the worker's first request) were ahead of it, from when the
        last of them got its turn: after a restart the burst is served first, and the bound
        holds again behind it."""
        now = time.time()
        if self._first is None:
            self._first = now
        backlog = start < self._first
        if backlog:
            self._backlog_in += 1
        ahead = self._backlog_in  # backlog requests taken in before this one
        # From when queue_timeout is counted: None while backlog requests are ahead.
        since = start if self._backlog_out >= ahead else None
        acquire = asyncio.ensure_future(self._turns.acquire())
        try:
            while True:
                now = time.time()
                ends = {}  # when the wait ends in a refusal, and why
                if self.request_deadline > 0:
                    ends[start + self.request_deadline] = "late"
                poll = None
                if self.queue_timeout > 0 and not backlog:
                    if since is None and self._backlog_out >= ahead:
                        since = now  # the backlog ahead of it has had its turns
                    if since is None:
                        poll = BACKLOG_POLL_S
                    else:
                        ends.setdefault(since + self.queue_timeout, "busy")
                end = min(ends) if ends else None
                timeout = None if end is None else max(0.0, end - now)
                if poll is not None:
                    timeout = poll if timeout is None else min(poll, timeout)
                await asyncio.wait({acquire}, timeout=timeout)
                if acquire.done():
                    return None
                if end is not None and time.time() >= end:
                    return ends[end]
        finally:
            if backlog:
                self._backlog_out += 1
            if not acquire.done():
                acquire.cancel()
                try:
                    await acquire
                except asyncio.CancelledError:
                    pass
                else:
                    self._turns.release()  # it got its turn as it was given up


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
