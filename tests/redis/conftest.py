"""A real `redis-server` on 127.0.0.1 for the Redis store tests (never a mock).

`redis_server` (one per session) is shared by most tests: `redis_url` flushes it first.
`own_redis` starts a private server a test may kill and restart (the fault tests).
A machine without `redis-server` on PATH skips these tests, naming what to install; under
.ci/run (MEMGUARD_REQUIRE_SYSTEM_PACKAGES=1) they fail instead, so CI never passes without
them (tests/system_packages.py).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Optional

import pytest
from system_packages import missing

STARTUP_TIMEOUT = 15.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_cluster_port() -> int:
    """A free port for a cluster node: at most 55535 (Redis refuses a higher one, its cluster
    bus listens 10000 ports above) with its bus port free as well."""
    for _attempt in range(1000):
        port = _free_port()
        if port > 55535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair (port, port + 10000) for a Redis cluster node")


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process on 127.0.0.1:`port`, no persistence; stop() and start()
    again on the same port (a restart loses every key, as a real one without persistence)."""

    def __init__(self, executable: str, *extra: str,
                 pick_port: Callable[[], int] = _free_port) -> None:
        self.executable = executable
        self.extra = extra
        self.pick_port = pick_port
        self.port = pick_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="memguard-redis-"))
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        for _attempt in range(3):
            log = (self.workdir / "redis.log").open("ab")
            self.process = subprocess.Popen(
                [self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
                 "--protected-mode", "yes", *self.extra],
                stdout=log, stderr=subprocess.STDOUT)
            log.close()
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while time.monotonic() < deadline and self.process.poll() is None:
                if _ping(self.port):
                    return
                time.sleep(0.02)
            self.stop()
            self.port = self.pick_port()  # the port was taken meanwhile: try another one
        raise RuntimeError(f"redis-server did not answer PING; see {self.workdir}/redis.log")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _executable() -> str:
    found = shutil.which("redis-server")
    if found is None:
        missing("redis-server (which the Redis store tests start on 127.0.0.1)", "redis-server")
    return found


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(_executable())
    server.start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the shared server, emptied for this test."""
    import redis

    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def own_redis(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A server of this test's own, which it may stop and start again; extra server
    arguments come from `@pytest.mark.parametrize("own_redis", [...], indirect=True)`."""
    server = RedisServer(_executable(), *getattr(request, "param", ()))
    server.start()
    yield server
    server.close()
