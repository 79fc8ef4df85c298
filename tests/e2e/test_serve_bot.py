"""``wxreply serve`` as a real process, a session online, SIGTERM, start again: the
session comes back without a scan, and nothing is answered twice."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from mpbot.simulator import Simulator
from sandbox.mpapi import FakeMpApi
from sandbox.webwx import FakeWebWx
from store import Stores
from store.embedded import free_port
from tests.conftest import TEST_TOKEN, Servers
from tests.util import until

OWNER = "o-serve-bot-0000000000000001"


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "wxreply", "serve"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


async def _healthy(port: int, proc: subprocess.Popen[bytes]) -> None:
    def ok() -> bool:
        assert proc.poll() is None, "serve exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    await until(lambda: asyncio.to_thread(ok), timeout=30, every=0.1)


def serve_env(port: int, tmp_path: Path, servers: Servers, namespace: str,
              fake_mpapi: FakeMpApi, fake_webwx: FakeWebWx, worker_id: str,
              **extra: str) -> dict[str, str]:
    """The environment of a `wxreply serve` child on the test's stores and fakes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXR_")}
    env.update({
        "WXR_PORT": str(port), "WXR_DATA_DIR": str(tmp_path / "var"),
        "WXR_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "WXR_MONGO_URL": servers.mongo_url, "WXR_REDIS_URL": servers.redis_url,
        "WXR_MONGO_DB": namespace, "WXR_REDIS_PREFIX": f"{namespace}:",
        "WXR_MP_TOKEN": TEST_TOKEN, "WXR_MP_APPID": fake_mpapi.appid,
        "WXR_MP_SECRET": fake_mpapi.secret, "WXR_MP_API_BASE": fake_mpapi.base_url,
        "WXR_WECHAT_LOGIN_BASE": fake_webwx.base_url, "WXR_WORKER_ID": worker_id,
        **extra,
    })
    return env


async def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(proc.wait, 30)


async def test_serve_restart_resumes_the_session(tmp_path: Path, servers: Servers, namespace: str,
                                                 stores: Stores, fake_webwx: FakeWebWx,
                                                 fake_mpapi: FakeMpApi) -> None:
    port = free_port()
    env = serve_env(port, tmp_path, servers, namespace, fake_mpapi, fake_webwx, "serve-test",
                    WXR_PACE_DELAY_MIN_MS="0", WXR_PACE_DELAY_MAX_MS="0",
                    WXR_PACE_COOLDOWN_S="0")
    log = tmp_path / "serve.out"
    sim = Simulator(f"http://127.0.0.1:{port}/wechat", TEST_TOKEN)
    account = fake_webwx.add_account("老张", friends=2)
    friend = account.friend_name(0)

    def replies() -> list[str]:
        return [s.text for s in fake_webwx.sent(account) if s.to_user == friend]

    proc = _start(env, log)
    try:
        await _healthy(port, proc)
        assert (await sim.send("添加 在吗 稍后回复你", OWNER)).text.startswith("已添加 01")
        link = (await sim.send("登录", OWNER)).text
        assert re.search(rf"http://127.0.0.1:{port}/qr/[A-Za-z0-9_-]{{24}}", link)
        pending = await until(lambda: fake_webwx.pending_logins())
        fake_webwx.scan(pending[0]["uuid"], account)
        fake_webwx.confirm(pending[0]["uuid"])
        await until(lambda: [m for m in fake_mpapi.sent if "已登录" in m.content], timeout=15)
        fake_webwx.push_friend_text(account, 0, "在吗")
        await until(lambda: replies() == ["稍后回复你"])
    finally:
        assert await _stop(proc) == 0
    assert fake_webwx.session_valid(account), "SIGTERM must not log the account out"
    user = await stores.users.by_openid(OWNER)
    assert user is not None
    record = await stores.bots.get(user.uid)
    assert record is not None
    assert record.state == "online"
    assert record.login_data

    proc = _start(env, log)
    try:
        await _healthy(port, proc)
        status = await until(
            lambda: _online_status(sim), timeout=20, every=0.3)
        assert "机器人：在线（老张）" in status
        assert fake_webwx.pending_logins() == []  # resumed without any QR
        fake_webwx.push_friend_text(account, 0, "在吗")
        await until(lambda: len(replies()) == 2)
        await asyncio.sleep(1.0)
        assert replies() == ["稍后回复你", "稍后回复你"]
        assert len([m for m in fake_mpapi.sent if "已登录" in m.content]) == 1
    finally:
        assert await _stop(proc) == 0
    output = log.read_text()
    assert OWNER not in output
    assert fake_mpapi.secret not in output


async def _online_status(sim: Simulator) -> str | None:
    text = (await sim.send("状态", OWNER)).text
    return text if "在线" in text else None
