"""The service (`python -m app`) as a real process on a free loopback port, for whatever needs HTTP.

One helper for the end-to-end and browser tests, the benchmarks and the fuzz script:

    with live_server(checkpoint_dir=Path("checkpoints")) as server:
        httpx.get(f"{server.url}/v1/models")

    python -m scripts.live_server [--checkpoint-dir DIR] [--env NAME=VALUE] -- CMD ARGS...

The command form starts the server, runs CMD with `{url}` in its arguments replaced by the
server's base URL (also in the environment as RNNLM_URL), stops the server and exits with
CMD's status; a traceback in the server's log turns a success into a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 180.0  # loading bundles on a busy 2-core machine; only a broken start waits it
GRACEFUL_SHUTDOWN_S = 30
PORT_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    """A started server: its base URL, its process, and how long it took to be ready."""

    url: str
    process: subprocess.Popen[bytes]
    startup_s: float
    _log: IO[bytes]

    def log(self) -> str:
        """Everything the server has written to stdout and stderr so far."""
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")

    def stop(self, timeout: float = GRACEFUL_SHUTDOWN_S + 10) -> int | None:
        """SIGTERM (a graceful shutdown), then SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def close(self) -> None:
        """Stop the server and delete its log."""
        self.stop()
        self._log.close()


def start(
    checkpoint_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = READY_TIMEOUT_S,
) -> LiveServer:
    """Spawn the service and return once /ready answers 200 (every bundle loaded).

    The free port is only free when asked: another process (a parallel test worker) may
    bind it first, and then the server is started again on another."""
    for _ in range(PORT_ATTEMPTS - 1):
        try:
            return _start(free_port(), checkpoint_dir, env, ready_timeout)
        except PortTaken:
            continue
    return _start(free_port(), checkpoint_dir, env, ready_timeout)


class PortTaken(RuntimeError):
    """The server exited at start because its port was bound meanwhile."""


def _start(
    port: int, checkpoint_dir: Path | None, env: Mapping[str, str] | None, ready_timeout: float
) -> LiveServer:
    full_env = {
        **os.environ,
        "RNNLM_LOG_LEVEL": "warning",
        "RNNLM_SHUTDOWN_GRACE_S": str(GRACEFUL_SHUTDOWN_S),
    }
    if checkpoint_dir is not None:
        full_env["RNNLM_CHECKPOINT_DIR"] = str(checkpoint_dir)
    full_env |= env or {}
    command = [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
    log = tempfile.NamedTemporaryFile(prefix="rnnlm-server-", suffix=".log")  # noqa: SIM115
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=log, stderr=log)
    server = LiveServer(f"http://127.0.0.1:{port}", process, 0.0, log)
    try:
        server.startup_s = _wait_ready(server, started + ready_timeout) - started
    except BaseException:
        server.close()
        raise
    return server


def _wait_ready(server: LiveServer, deadline: float) -> float:
    """Poll /ready (another process: there is nothing to wait on but its answers)."""
    with httpx.Client(timeout=5) as client:
        while True:
            if server.process.poll() is not None:
                log = server.log()
                error = PortTaken if "address already in use" in log else RuntimeError
                raise error(f"the server exited before it was ready:\n{log}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{server.url}/ready").status_code == 200:
                    return time.perf_counter()
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the server was not ready in time:\n{server.log()}")
            time.sleep(0.05)


@contextlib.contextmanager
def live_server(
    checkpoint_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = READY_TIMEOUT_S,
) -> Iterator[LiveServer]:
    """A ready server for the block, stopped (gracefully) after it."""
    server = start(checkpoint_dir, env, ready_timeout)
    try:
        yield server
    finally:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.live_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--checkpoint-dir", type=Path, help="bundles to serve (default: env)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("command", nargs="+", help="run against the server ({url} replaced)")
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    server = start(args.checkpoint_dir, env)
    try:
        command = [part.replace("{url}", server.url) for part in args.command]
        status = subprocess.call(command, env={**os.environ, "RNNLM_URL": server.url})
        server.stop()  # a traceback while draining counts too
        log = server.log()
    finally:
        server.close()
    if "Traceback" in log:
        print(f"the server logged a traceback:\n{log}", file=sys.stderr)
        return status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
