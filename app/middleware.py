"""ASGI middleware: request ids, one log line and the HTTP metrics per request; the body cap."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_response
from app.metrics import Metrics

log = logging.getLogger("app.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Metric labels come from fixed sets: any other method is "other", an unmatched path
# "unmatched", so no client can add series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")


def printable(text: str) -> str:
    """`text` for a log line: control characters (and backslashes) escaped, so a request
    cannot forge lines or terminal sequences in the log."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class RequestLog:
    """Gives each request an id (X-Request-ID, kept if the client sent a sane one) and logs
    method, path, status and time when the response ends.

    The metrics are labelled by route template (`/v1/models/{model_id}`), never the raw
    path, and by known method, so a scanner's random URLs and methods cannot grow the
    series without bound.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = sent if _SAFE_ID.match(sent) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 499  # no answer started: the client left first (nginx's code for it)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            status = 500 if status == 499 else status
            raise
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            label = method if method in METHODS else "other"
            self.metrics.requests.labels(label, route, str(status)).inc()
            self.metrics.latency.labels(label, route).observe(seconds)
            log.info(
                "%s %s %d %.1fms id=%s",
                printable(method),
                printable(scope["path"]),
                status,
                seconds * 1e3,
                request_id,
            )


class RequestBody:
    """Reads each request's body before the app runs, then watches its connection.

    - A body over `max_bytes` is answered 413 as soon as that is known (by Content-Length
      or while reading), so it is never read whole.
    - A body that stops arriving for `read_timeout` seconds is answered 408: a slow client
      cannot hold a request open indefinitely.
    - Once the body is in, a client that leaves before its answer is complete cancels
      the app's work for it (a plain request's decoding rows, scoring passes and fits
      included), as a disconnecting stream already does.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout

    async def _read(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None once an error has been answered (or the client left)."""
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(
                scope, send, 413, f"request body is larger than {self.max_bytes} bytes"
            )
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout)
            except TimeoutError:
                await self._reject(
                    scope, send, 408, f"the request body stalled for {self.read_timeout:g} s"
                )
                return None
            if message["type"] == "http.disconnect":
                return None
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._reject(
                    scope, send, 413, f"request body is larger than {self.max_bytes} bytes"
                )
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        await self._reject(scope, send, 413, f"request body is larger than {self.max_bytes} bytes")

    async def _reject(self, scope: Scope, send: Send, status: int, message: str) -> None:
        code = "body_too_large" if status == 413 else "body_timeout"
        response = error_response(status, message, code=code, headers={"Connection": "close"})
        await response(scope, _no_body, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await self._read(scope, receive, send)
        if body is None:
            return
        replayed = False
        answered = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def watched_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        async def client_left() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        work = asyncio.ensure_future(self.app(scope, replay, watched_send))
        watch = asyncio.ensure_future(client_left())
        try:
            await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done() and not answered:
                work.cancel()  # the client left: nobody will read this answer
        finally:
            watch.cancel()
            if not work.done():  # cancelled from outside (shutdown): take the work along
                work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work


async def _no_body() -> Message:
    return {"type": "http.disconnect"}
