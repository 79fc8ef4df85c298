"""Hole 1: the embedded stores were open to every local account.

The attack: another local user reads the data directory, connects to the embedded Redis
and MongoDB-wire server on 127.0.0.1 without credentials, and reads the password from
``ps``.  Each must fail.  Where the suite runs as root, the attack runs for real in a
process under another uid (``nobody``); everywhere, the mode bits of every file and an
unauthenticated connection are checked as this user.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import stat
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest
import redis
from pymongo.errors import OperationFailure

from config import Settings
from wxreply.serve import RUNTIME_FILE, EmbeddedStores


class Running:
    def __init__(self, data_dir: Path, embedded: EmbeddedStores, mongo_url: str,
                 redis_url: str) -> None:
        self.data_dir = data_dir
        self.embedded = embedded
        self.mongo_url = mongo_url
        self.redis_url = redis_url

    def port(self, name: str) -> int:
        (server,) = [s for s in self.embedded.servers if s.name == name]
        return server.port

    def pid(self, name: str) -> int:
        (server,) = [s for s in self.embedded.servers if s.name == name]
        assert server.process is not None
        return server.process.pid


@pytest.fixture
def running() -> Iterator[Running]:
    # Under a world-readable /tmp directory (pytest's own tmp dirs are 0700 and would
    # hide the hole), in a data dir left 0755 by an older wxreply.
    base = Path(tempfile.mkdtemp(prefix="wxr-sec-"))
    base.chmod(0o755)
    data_dir = base / "var"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    old_umask = os.umask(0o022)  # a careless caller's umask: the children must not inherit it
    embedded = EmbeddedStores(Settings(data_dir=data_dir))
    try:
        mongo_url, redis_url = embedded.start()
        yield Running(data_dir, embedded, mongo_url, redis_url)
    finally:
        os.umask(old_umask)
        embedded.stop()
        shutil.rmtree(base, ignore_errors=True)


def _op_msg(command: bytes) -> bytes:
    """A MongoDB OP_MSG carrying one BSON document (``command``)."""
    body = struct.pack("<I", 0) + b"\x00" + command
    return struct.pack("<iiii", 16 + len(body), 1, 0, 2013) + body


def _bson_find(collection: str, db: str) -> bytes:
    def string(name: str, value: str) -> bytes:
        raw = value.encode() + b"\x00"
        return b"\x02" + name.encode() + b"\x00" + struct.pack("<i", len(raw)) + raw

    elements = string("find", collection) + string("$db", db)
    return struct.pack("<i", 4 + len(elements) + 1) + elements + b"\x00"


def _raw_exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        return sock.recv(4096)


def test_every_file_is_private_and_no_store_answers_without_the_password(
        running: Running) -> None:
    loose = []
    for path in [running.data_dir, *running.data_dir.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            loose.append(f"{path.relative_to(running.data_dir.parent)} {mode:o}")
    assert loose == []
    assert stat.S_IMODE(running.data_dir.stat().st_mode) == 0o700

    # Redis: nothing without AUTH, not even a read, and no code can be planted.
    bare = redis.Redis(port=running.port("redis"), socket_timeout=5)
    for attempt in (lambda: bare.keys("*"), lambda: bare.set("wxr:code:reset:123456", "1000")):
        with pytest.raises(redis.AuthenticationError):
            attempt()
    bare.close()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=running.port("redis"), password="wrong-guess").ping()  # noqa: S106

    # MongoDB: the handshake answers, every data command is refused.
    anonymous: pymongo.MongoClient = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{running.port('mongo')}/?directConnection=true",
        serverSelectionTimeoutMS=5000)
    try:
        with pytest.raises(OperationFailure, match="requires authentication"):
            anonymous.wxreply.users.find_one()
        with pytest.raises(OperationFailure, match="requires authentication"):
            anonymous.wxreply.users.insert_one({"_id": 1, "password_hash": b"x"})
        with pytest.raises(OperationFailure, match="requires authentication"):
            anonymous.admin.command("listDatabases")
    finally:
        anonymous.close()
    wrong: pymongo.MongoClient = pymongo.MongoClient(
        running.mongo_url.replace(running.mongo_url.split(":")[2].split("@")[0], "guess"),
        serverSelectionTimeoutMS=5000)
    try:
        with pytest.raises(OperationFailure):
            wrong.wxreply.users.find_one()
    finally:
        wrong.close()

    # The real URLs work, and the passwords appear on no command line.
    owner: pymongo.MongoClient = pymongo.MongoClient(running.mongo_url)
    owner.wxreply.users.insert_one({"_id": 1000})
    assert owner.wxreply.users.count_documents({}) == 1
    owner.close()
    assert redis.Redis.from_url(running.redis_url).ping()
    urls = json.loads((running.data_dir / RUNTIME_FILE).read_text())
    passwords = [urls["redis_url"].split(":")[2].split("@")[0],
                 urls["mongo_url"].split(":")[2].split("@")[0]]
    assert all(len(p) >= 32 for p in passwords)
    for name in ("redis", "mongo"):
        cmdline = Path(f"/proc/{running.pid(name)}/cmdline").read_bytes().decode()
        assert not any(p in cmdline for p in passwords)


_ATTACK = r"""
import json, socket, sys
data_dir, redis_port, mongo_port, redis_pid, find_msg = sys.argv[1:6]
found = {}
def attempt(name, fn):
    try:
        found[name] = ("ok", fn()[:200])
    except OSError as exc:
        found[name] = ("refused", type(exc).__name__)
import os
attempt("list data dir", lambda: repr(os.listdir(data_dir)))
for rel in ("stores.json", "redis/password", "redis/redis.conf", "redis/appendonly.aof",
            "mongo/wxreply-password", "mongo/WiredTiger.wt", "secret_key"):
    attempt("read " + rel, lambda rel=rel: open(os.path.join(data_dir, rel), "rb").read().hex())
def talk(port, payload):
    with socket.create_connection(("127.0.0.1", int(port)), timeout=5) as s:
        s.sendall(payload)
        return s.recv(4096).decode("latin-1")
found["redis"] = talk(redis_port, b"SET wxr:code:reset:123456 1000\r\nKEYS *\r\n")
found["mongo"] = talk(mongo_port, bytes.fromhex(find_msg))
found["cmdline"] = open("/proc/%s/cmdline" % redis_pid, "rb").read().decode("latin-1")
print(json.dumps(found))
"""


def _python_for(uid: int) -> str | None:
    """A Python interpreter another account can run (the venv's may sit under /root)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3")):
        if candidate and os.path.exists(candidate):
            probe = subprocess.run([candidate, "-c", "pass"], preexec_fn=_become(uid),  # noqa: S603, PLW1509
                                   capture_output=True, check=False, timeout=30)
            if probe.returncode == 0:
                return candidate
    return None


def _become(uid: int):  # type: ignore[no-untyped-def]
    def switch() -> None:  # pragma: no cover - runs in the child
        os.setgroups([])
        os.setgid(pwd.getpwuid(uid).pw_gid)
        os.setuid(uid)

    return switch


def test_another_local_user_can_neither_read_nor_use_the_stores(running: Running) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run the attack under another uid; the mode bits and "
                    "unauthenticated connections are checked by the test above")
    uid = pwd.getpwnam("nobody").pw_uid
    python = _python_for(uid)
    assert python is not None, "no Python that the nobody account can run"
    result = subprocess.run(  # noqa: S603 - fixed argv
        [python, "-c", _ATTACK, str(running.data_dir), str(running.port("redis")),
         str(running.port("mongo")), str(running.pid("redis")),
         _op_msg(_bson_find("users", "wxreply")).hex()],
        preexec_fn=_become(uid), capture_output=True, text=True, timeout=60, check=False,  # noqa: PLW1509
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    reads = {k: v for k, v in found.items() if k.startswith(("list", "read"))}
    assert len(reads) == 8
    assert all(v == ["refused", "PermissionError"] for v in reads.values()), reads
    assert found["redis"].startswith("-NOAUTH"), found["redis"]
    assert "+OK" not in found["redis"]
    assert "requires authentication" in found["mongo"]
    assert "requirepass" not in found["cmdline"]
    # The planted code is not there.
    assert redis.Redis.from_url(running.redis_url).get("wxr:code:reset:123456") is None
