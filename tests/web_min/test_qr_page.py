"""/qr/<pid>: unguessable, expiring, self-contained, escaped (HTTP level; the real
browser is in tests/e2e/test_browser.py)."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import urllib.parse
from typing import Any

from freezegun import freeze_time
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from config import Settings
from store import Stores
from store.bots import PID_BYTES, QrStore, valid_pid
from tests.conftest import Web
from tests.web_min.conftest import Accounts
from wxreply.app import build_bot_service

SCRIPT = "<script>alert(1)</script>"


async def _fetch(web: Web, path: str) -> HTTPResponse:
    return await AsyncHTTPClient().fetch(web.base_url + path, raise_error=False)


async def _pid(accounts: Accounts, name: str) -> str:
    me = await accounts.logged_in(name)
    answer = await me.get("/wechat/testlogin")
    assert answer.code == 200
    return str(answer.body["pid"])


async def test_the_page_is_chinese_self_contained_and_guides(accounts: Accounts,
                                                             api_web: Web) -> None:
    pid = await _pid(accounts, "alice")
    page = await _fetch(api_web, f"/qr/{pid}")
    assert page.code == 200
    html = page.body.decode()
    assert '<html lang="zh-CN">' in html
    assert 'name="viewport" content="width=device-width, initial-scale=1"' in html
    assert f'src="/static/qrimages/{pid}.png"' in html
    assert "另一台设备" in html
    assert "手机微信无法扫描自己屏幕上的二维码" in html
    assert "正在生成二维码" in html  # the state right after testlogin
    assert "分钟内有效" in html      # the expiry, also without JavaScript
    # Nothing from elsewhere: every src/href is local, and the CSP forbids the rest.
    for url in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "img-src 'self'" in csp
    assert "connect-src 'self'" in csp
    assert "http" not in csp
    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce is not None
    assert html.count(f'nonce="{nonce.group(1)}"') == 2  # the one style and the one script
    assert page.headers["Cache-Control"] == "no-store"
    # Without JavaScript the page refreshes itself while the login is pending.
    assert '<noscript><meta http-equiv="refresh" content="5"></noscript>' in html


async def test_pids_are_unguessable(accounts: Accounts, stores: Stores,
                                    settings: Settings) -> None:
    service = build_bot_service(settings, stores)
    pids = []
    for i in range(40):
        user, _ = await stores.users.get_or_create(f"o-pid-{i:022d}")
        pids.append((await service.login(user)).pid)
    assert len(set(pids)) == len(pids)
    for pid in pids:
        assert valid_pid(pid)
        raw = base64.urlsafe_b64decode(pid + "=" * (-len(pid) % 4))
        assert len(raw) == PID_BYTES >= 16  # ≥ 128 random bits
    # Bits vary everywhere, not only in a counter's tail.
    assert len({pid[:4] for pid in pids}) > 30


async def test_unknown_and_malformed_pids_are_a_plain_404(api_web: Web) -> None:
    for pid in ("A" * 24, "short", urllib.parse.quote(SCRIPT, safe=""), "a" * 100):
        for path in (f"/qr/{pid}", f"/qr/{pid}/status", f"/static/qrimages/{pid}.png"):
            response = await _fetch(api_web, path)
            assert response.code == 404, path
            assert b"<script>alert" not in response.body
            assert b"alert(1)" not in response.body


async def test_a_qr_expires(stores: Stores, settings: Settings, api_web: Web) -> None:
    settings = dataclasses.replace(settings, qr_ttl=120)
    service = build_bot_service(settings, stores)
    user, _ = await stores.users.get_or_create("o-expiry-000000000000000001")
    with freeze_time("2026-05-01 08:00:00", real_asyncio=True) as frozen:
        ticket = await service.login(user)
        status = json.loads((await _fetch(api_web, f"/qr/{ticket.pid}/status")).body)
        assert status["state"] == "requested"
        assert status["expires_in"] == 120
        assert status["final"] is False
        frozen.tick(121)
        status = json.loads((await _fetch(api_web, f"/qr/{ticket.pid}/status")).body)
        assert status["state"] == "expired"
        assert status["label"].startswith("已过期")
        assert status["final"] is True
        page = (await _fetch(api_web, f"/qr/{ticket.pid}")).body.decode()
        assert "已过期" in page
        assert "http-equiv" not in page  # nothing left to wait for
    # And Redis forgets the pid soon after: no link lives longer than its QR + grace.
    ttl_ms = await stores.redis.pttl(stores.kv.key("qr", ticket.pid))
    assert 0 < ttl_ms <= 120_000 + QrStore.GRACE_MS


async def _qr(stores: Stores, nickname: str, state: str = "online") -> str:
    qr = QrStore(stores.kv)
    user, _ = await stores.users.get_or_create("o-xss-0000000000000000001")
    pid = "X" * 12 + "abcdefghijkl"
    await qr.create(pid, user.uid, 4_000_000_000.0, 60_000)
    await qr.update(pid, state, nickname)
    return pid


async def test_a_hostile_nickname_is_escaped_everywhere(stores: Stores, api_web: Web) -> None:
    pid = await _qr(stores, SCRIPT + '"><img src=x onerror=alert(2)>')
    page = (await _fetch(api_web, f"/qr/{pid}")).body.decode()
    assert "已登录：&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img" in page
    assert "<script>alert" not in page
    assert "<img src=x" not in page
    status = await _fetch(api_web, f"/qr/{pid}/status")
    assert b"<" not in status.body
    label = json.loads(status.body)["label"]
    assert label == "已登录：" + SCRIPT + '"><img src=x onerror=alert(2)>'


async def test_every_state_has_its_words(stores: Stores, api_web: Web) -> None:
    expected = {"waiting_scan": "等待扫码", "scanned": "已扫码，请在手机上确认",
                "online": "已登录：小明", "expired": "已过期", "refused": "无法登录",
                "logged_out": "已退出"}
    for state, words in expected.items():
        pid = await _qr(stores, "小明", state)
        body: dict[str, Any] = json.loads((await _fetch(api_web, f"/qr/{pid}/status")).body)
        assert body["label"].startswith(words), (state, body)
        assert words in (await _fetch(api_web, f"/qr/{pid}")).body.decode()


async def test_the_png_is_served_from_redis(stores: Stores, api_web: Web) -> None:
    pid = await _qr(stores, "", "waiting_scan")
    assert (await _fetch(api_web, f"/static/qrimages/{pid}.png")).code == 404
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
    await QrStore(stores.kv).put_png(pid, png)
    response = await _fetch(api_web, f"/static/qrimages/{pid}.png")
    assert response.code == 200
    assert response.headers["Content-Type"] == "image/png"
    assert response.body == png
    status = json.loads((await _fetch(api_web, f"/qr/{pid}/status")).body)
    assert status["has_png"] is True


def _howto_hidden(page: str) -> bool:
    match = re.search(r'<div id="howto"( hidden)?>', page)
    assert match is not None
    return match.group(1) is not None


async def test_an_expired_qr_says_expired_only(stores: Stores, api_web: Web) -> None:
    # No "正在生成二维码…" beside the red expiry line, and no scanning steps.
    pid = await _qr(stores, "", "expired")
    page = (await _fetch(api_web, f"/qr/{pid}")).body.decode()
    assert "正在生成二维码" not in page
    assert '<div class="placeholder" id="placeholder">二维码已失效</div>' in page
    assert _howto_hidden(page)
    status = json.loads((await _fetch(api_web, f"/qr/{pid}/status")).body)
    assert status["placeholder"] == "二维码已失效"


async def test_once_online_the_instructions_are_hidden(stores: Stores, api_web: Web) -> None:
    waiting = (await _fetch(api_web, f"/qr/{await _qr(stores, '', 'waiting_scan')}")).body
    assert not _howto_hidden(waiting.decode())
    online = (await _fetch(api_web, f"/qr/{await _qr(stores, '小明', 'online')}")).body.decode()
    assert _howto_hidden(online)
    assert "另一台设备" in online  # still in the page, for the script to show or hide


async def test_an_unreachable_login_service_is_said_at_once(stores: Stores,
                                                            api_web: Web) -> None:
    qr = QrStore(stores.kv)
    pid = await _qr(stores, "", "requested")
    await qr.update(pid, "requested", "", "unreachable")
    status = json.loads((await _fetch(api_web, f"/qr/{pid}/status")).body)
    assert status["label"] == "暂时连不上微信的登录服务，正在重试…"
    assert status["problem"] == "unreachable"
    assert status["final"] is False  # the worker keeps trying
    page = (await _fetch(api_web, f"/qr/{pid}")).body.decode()
    assert "暂时连不上微信的登录服务" in page
    assert "正在生成二维码" not in page
    # Back once a QR came: the problem is gone with the next state.
    await qr.update(pid, "waiting_scan", "", "")
    assert json.loads((await _fetch(api_web, f"/qr/{pid}/status")).body)["label"] == "等待扫码"
