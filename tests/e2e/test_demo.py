"""``make demo`` walked by a script, over HTTP only, as a person would click through it."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import urllib.parse
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from store.embedded import free_port
from tests.util import until


async def _get(url: str) -> dict:  # type: ignore[type-arg]
    response = await AsyncHTTPClient().fetch(url, request_timeout=10)
    return json.loads(response.body)


async def _post(url: str, **fields: object) -> dict:  # type: ignore[type-arg]
    response = await AsyncHTTPClient().fetch(HTTPRequest(
        url, method="POST", body=json.dumps(fields), request_timeout=10,
        headers={"Content-Type": "application/json"}))
    return json.loads(response.body) if response.body else {}


async def _chat(port: int, *words: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wxreply", "chat", "--url", f"http://127.0.0.1:{port}/wechat",
        *words, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return out.decode()


async def test_demo_walkthrough(tmp_path: Path) -> None:
    port, webwx_port, mp_port = free_port(), free_port(), free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; waits use to_thread
        [sys.executable, "-m", "sandbox.demo", "--port", str(port), "--webwx-port",
         str(webwx_port), "--mp-port", str(mp_port), "--data-dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    webwx = f"http://127.0.0.1:{webwx_port}/_fake"
    try:
        banner = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)  # type: ignore[union-attr]
        while b"wxreply demo is running" not in banner:
            banner = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)  # type: ignore[union-attr]
        assert "已添加 01" in await _chat(port, "添加", "你好", "我在开会")
        link = await _chat(port, "登录")
        pid = re.search(r"/qr/([A-Za-z0-9_-]{24})", link).group(1)  # type: ignore[union-attr]
        page = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/qr/{pid}")
        assert "扫码登录微信".encode() in page.body
        logins = await until(lambda: _pending(webwx), timeout=30)
        uuid = logins[0]["uuid"]
        await _post(f"{webwx}/scan", uuid=uuid, account="演示用户")
        await _post(f"{webwx}/confirm", uuid=uuid)
        await until(lambda: _state(port, pid, "online"), timeout=30)
        await _post(f"{webwx}/push_friend", uin="演示用户", from_user=0, text="你好")
        sent = await until(lambda: _sent(webwx), timeout=15)
        assert sent[0]["text"] == "我在开会"
        notices = await until(lambda: _notices(mp_port), timeout=15)
        assert any("已登录" in n["content"] for n in notices)
        # The web page is reachable for a person too.
        assert b"<button" in (await AsyncHTTPClient().fetch(f"{webwx}/")).body
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0
        proc.stdout.close()  # type: ignore[union-attr]


async def _pending(webwx: str) -> list:  # type: ignore[type-arg]
    return (await _get(f"{webwx}/logins"))["logins"]


async def _sent(webwx: str) -> list:  # type: ignore[type-arg]
    return (await _get(f"{webwx}/sent?" + urllib.parse.urlencode({"uin": "演示用户"})))["sent"]


async def _notices(mp_port: int) -> list:  # type: ignore[type-arg]
    return (await _get(f"http://127.0.0.1:{mp_port}/_fake/sent"))["sent"]


async def _state(port: int, pid: str, state: str) -> bool:
    return (await _get(f"http://127.0.0.1:{port}/qr/{pid}/status"))["state"] == state


async def test_demo_on_a_personal_subscription_account(tmp_path: Path) -> None:
    """``make demo MP_KIND=subscription``: the notice arrives in the next reply."""
    port, webwx_port, mp_port = free_port(), free_port(), free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; waits use to_thread
        [sys.executable, "-m", "sandbox.demo", "--port", str(port), "--webwx-port",
         str(webwx_port), "--mp-port", str(mp_port), "--data-dir", str(tmp_path / "demo"),
         "--mp-kind", "subscription"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    webwx = f"http://127.0.0.1:{webwx_port}/_fake"
    try:
        banner = b""
        while b"personal subscription account" not in banner:
            banner = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)  # type: ignore[union-attr]
        link = await _chat(port, "登录")
        pid = re.search(r"/qr/([A-Za-z0-9_-]{24})", link).group(1)  # type: ignore[union-attr]
        uuid = (await until(lambda: _pending(webwx), timeout=30))[0]["uuid"]
        await _post(f"{webwx}/scan", uuid=uuid, account="订阅号用户")
        await _post(f"{webwx}/confirm", uuid=uuid)
        await until(lambda: _state(port, pid, "online"), timeout=30)
        stats = await until(lambda: _refused(mp_port), timeout=15)
        assert stats == [48001]
        reply = await until(lambda: _with_notice(port), timeout=15)
        assert "你的微信「订阅号用户」已登录" in reply
        assert "【未读通知】" not in await _chat(port, "列表")
        assert (await _get(f"http://127.0.0.1:{mp_port}/_fake/sent"))["sent"] == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0
        proc.stdout.close()  # type: ignore[union-attr]


async def _refused(mp_port: int) -> list[int]:
    stats = await _get(f"http://127.0.0.1:{mp_port}/_fake/stats")
    return [c["errcode"] for c in stats["calls"] if c["path"] == "message/custom/send"]


async def _with_notice(port: int) -> str | None:
    # The notifier keeps the notice a moment after the 48001; until then 列表 is plain.
    reply = await _chat(port, "列表")
    return reply if "【未读通知】" in reply else None
