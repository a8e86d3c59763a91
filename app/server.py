"""The HTTP server: uvicorn with the limits a public endpoint needs, set in one place.

`python -m app [--host H] [--port P]` (the Makefile, the image and Kubernetes run it) starts
uvicorn on `create_app` with:
- a deadline for each request's head (request line and headers): a client that has not
  sent them within RNNLM_HEADER_TIMEOUT_S gets 408 and its connection is closed, so slow
  clients cannot hold connections open indefinitely (uvicorn itself has no such limit);
- the body deadline, RNNLM_BODY_TIMEOUT_S, which app/middleware.py enforces;
- at most RNNLM_MAX_CONNECTIONS connections or requests in progress (uvicorn's
  limit_concurrency: beyond it, 503), idle keep-alive connections closed after
  RNNLM_KEEP_ALIVE_S, and RNNLM_SHUTDOWN_GRACE_S for in-flight requests on SIGTERM;
- at most two glibc malloc arenas unless MALLOC_ARENA_MAX says otherwise (see
  `limit_malloc_arenas`).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import logging
import os
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.settings import get_settings

log = logging.getLogger(__name__)

# glibc's mallopt parameter for the arena count (malloc.h).
M_ARENA_MAX = -8
MALLOC_ARENAS = 2

TIMEOUT_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HeadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline for each request's head."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout = get_settings().header_timeout_s
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        between = self.cycle is None or self.cycle.response_complete
        if between and self._head_deadline is None:  # the first bytes of the next request
            self._start_deadline()
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # its head is in: a new request/response cycle began
            self._stop_deadline()

    def _start_deadline(self) -> None:
        self._stop_deadline()
        self._head_deadline = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _stop_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            log.info("closing a connection whose request head took over %gs", self.head_timeout)
            self.transport.write(TIMEOUT_408)
            self.transport.close()


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas, unless the operator set MALLOC_ARENA_MAX; True if applied.

    glibc gives each thread that allocates under contention an arena of its own, up to
    8 per core, and memory freed in one is not returned while any block in it lives. The
    service runs every CPU job in a short-lived thread (app/jobs.py), so under mixed
    traffic the heap fragments across arenas: in a 300 s soak the RSS grew from 612 to
    1,212 MB and was still rising; with two arenas it stayed at 700-930 MB with no trend
    (docs/reliability.md). Other C libraries (musl, macOS) are left alone.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False  # glibc read it at start-up
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return False
    return bool(libc.mallopt(M_ARENA_MAX, arenas))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    args = parser.parse_args(argv)
    settings = get_settings()
    limit_malloc_arenas()
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        http=HeadDeadlineProtocol,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_s,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )
