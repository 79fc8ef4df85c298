"""Hole 7: no idle, header or body timeouts; the accept loop spun on EMFILE.

The attacks: hundreds of connections that send half a request and wait; and, once the
process has no file descriptor left, a steady stream of new connections (which used to
make Tornado's accept handler spin at 100 % CPU and write a traceback per turn).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import tornado.netutil
from tornado.httpclient import AsyncHTTPClient

from config import Settings
from store import Stores
from store.embedded import free_port
from wxreply.app import build_app
from wxreply.listener import GuardedHTTPServer, build_http_server

HALF_SENT = 200
TIMEOUT_S = 1.0


@pytest.fixture
async def guarded(stores: Stores,
                  settings: Settings) -> AsyncIterator[tuple[int, GuardedHTTPServer]]:
    server = build_http_server(build_app(settings, stores), header_timeout_s=TIMEOUT_S,
                               body_timeout_s=TIMEOUT_S)
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    yield sockets[0].getsockname()[1], server
    server.stop()
    await server.close_all_connections()


async def _closed_by_server(sock: socket.socket, within_s: float) -> bool:
    loop = asyncio.get_running_loop()
    try:
        data = await asyncio.wait_for(loop.sock_recv(sock, 1024), within_s)
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return data == b""


async def test_half_sent_requests_are_closed_while_healthz_answers(
        guarded: tuple[int, GuardedHTTPServer], figures: dict[str, object]) -> None:
    port, _ = guarded
    loop = asyncio.get_running_loop()
    held: list[socket.socket] = []
    try:
        for i in range(HALF_SENT):
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            if i % 2:  # headers never finished
                await loop.sock_sendall(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
            else:      # a body that never comes
                await loop.sock_sendall(sock, b"POST /account/login HTTP/1.1\r\nHost: x\r\n"
                                              b"Content-Type: application/json\r\n"
                                              b"Content-Length: 1000\r\n\r\n{\"user")
            held.append(sock)
        started = time.monotonic()
        health = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/healthz",
                                               request_timeout=10)
        assert health.code == 200
        answered_s = time.monotonic() - started
        closed = await asyncio.gather(*(_closed_by_server(s, TIMEOUT_S + 5) for s in held))
        closed_s = time.monotonic() - started
        assert all(closed), f"{closed.count(False)} of {HALF_SENT} still open"
        figures.update(half_sent=HALF_SENT, timeout_s=TIMEOUT_S,
                       healthz_answered_s=round(answered_s, 2),
                       all_closed_after_s=round(closed_s, 2))
    finally:
        for sock in held:
            sock.close()


def test_serve_uses_the_timeouts() -> None:
    from tornado.web import Application

    server = build_http_server(Application())
    assert server.conn_params.header_timeout == 10.0
    assert server.conn_params.body_timeout == 30.0
    assert server.conn_params.max_body_size == 1 << 20
    assert server.xheaders is False


def _low_limit() -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))


def test_out_of_file_descriptors_neither_spins_nor_floods_the_log(
        tmp_path: Path, servers: object, figures: dict[str, object]) -> None:
    """serve under a hard limit of 200 descriptors, flooded with idle connections."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXR_")}
    env.update({"WXR_DATA_DIR": str(tmp_path / "var"), "WXR_PORT": str(port),
                "WXR_MONGO_URL": servers.mongo_url, "WXR_REDIS_URL": servers.redis_url,  # type: ignore[attr-defined]
                "WXR_MONGO_DB": "emfile"})
    out = tmp_path / "serve.out"
    with out.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "wxreply", "serve", "--no-worker"],
                                env=env, stdout=fh, stderr=subprocess.STDOUT,
                                preexec_fn=_low_limit)  # noqa: PLW1509
    held: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, out.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, out.read_text()
                time.sleep(0.1)
        assert "open-file limit 200 (hard 200)" in out.read_text()
        cpu_before = _cpu_seconds(proc.pid)
        size_before = out.stat().st_size
        started = time.monotonic()
        # More connections than descriptors, kept coming for 3 s.
        while time.monotonic() - started < 3:
            for _ in range(50):
                sock = socket.socket()
                sock.settimeout(1)
                try:
                    sock.connect(("127.0.0.1", port))
                    held.append(sock)
                except OSError:
                    sock.close()
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        cpu = _cpu_seconds(proc.pid) - cpu_before
        logged = out.read_bytes()[size_before:].decode(errors="replace")
        assert cpu < 0.5 * elapsed, f"serve used {cpu:.1f} s CPU in {elapsed:.1f} s"
        assert len(logged) < 10_000, logged[-2000:]
        assert "cannot accept connections" in logged
        figures.update(connections_tried=len(held), cpu_s=round(cpu, 2),
                       wall_s=round(elapsed, 1), log_bytes=len(logged))
        for sock in held:
            sock.close()
        held.clear()
        # Once the idle connections are gone, serve answers again.
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                            timeout=2) as resp:
                    assert json.loads(resp.read())["status"] == "ok"
                    break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        for sock in held:
            sock.close()
        proc.terminate()
        proc.wait(timeout=30)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
