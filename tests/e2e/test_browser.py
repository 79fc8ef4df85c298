"""The QR page in a real headless Chromium, against the whole loop: the API starts a QR
login, the worker runs unmodified itchat against the fake web WeChat, and the page shows
the QR image and follows the login until "已登录".

Screenshots go to ``test-artifacts/`` (git-ignored) for a person to look at.  Chromium
is required: a missing browser fails these tests with the way to install it (``make
test`` does), it never skips them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import tornado.httpserver
import tornado.netutil

from config import Settings
from replybot.webwx.driver import ItchatDriver
from replybot.worker import Worker
from sandbox.webwx import FakeWebWx
from store import Stores
from tests.util import until
from tests.web_min.cdp import Browser, ChromiumProcess, Page, launch_chromium
from tests.web_min.conftest import Accounts, Client
from wxreply.app import build_app

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PHONE = {"width": 390, "height": 844, "mobile": True, "scale": 2.0}
DESKTOP = {"width": 1280, "height": 800, "mobile": False, "scale": 1.0}


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromiumProcess]:
    with launch_chromium(tmp_path_factory.mktemp("chromium") / "profile") as process:
        yield process


@dataclasses.dataclass
class Site:
    base_url: str
    stores: Stores
    webwx: FakeWebWx
    accounts: Accounts


@pytest.fixture
async def site(stores: Stores, settings: Settings, fake_webwx: FakeWebWx) -> AsyncIterator[Site]:
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    base_url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    settings = dataclasses.replace(settings, public_url=base_url, qr_ttl=60)
    server = tornado.httpserver.HTTPServer(build_app(settings, stores, password_rounds=4),
                                           xheaders=True, max_body_size=1 << 20)
    server.add_sockets(sockets)
    stop = asyncio.Event()
    worker = Worker(stores, settings, lambda: ItchatDriver(save_interval=0.2),
                    worker_id="w-browser", heartbeat_s=0.3, lease_ms=3000)
    running = asyncio.ensure_future(worker.run(stop))
    try:
        yield Site(base_url, stores, fake_webwx, Accounts(stores, base_url))
    finally:
        stop.set()
        await running
        server.stop()
        await server.close_all_connections()


@pytest.fixture
async def browser(chromium: ChromiumProcess) -> AsyncIterator[Browser]:
    connected = await Browser.connect(chromium.ws_url)
    yield connected
    await connected.close()


async def _start_qr_login(site: Site, username: str) -> str:
    """Through the API, as the original front end did: log in, GET /wechat/testlogin."""
    me: Client = await site.accounts.logged_in(username)
    answer = await me.get("/wechat/testlogin")
    assert answer.code == 200, answer.body
    return str(answer.body["pid"])


def _real_problems(page: Page) -> list[str]:
    # A 404 for the PNG before the worker has drawn it, and the favicon, are expected;
    # a script error or a CSP violation is not.
    return [p for p in page.errors()
            if "qrimages" not in p and "favicon" not in p]


async def test_qr_page_follows_the_login_to_online_on_a_phone(site: Site,
                                                              browser: Browser) -> None:
    account = site.webwx.add_account("小明", friends=2)
    pid = await _start_qr_login(site, "alice")
    page = await browser.new_page(**PHONE)  # type: ignore[arg-type]
    try:
        await page.goto(f"{site.base_url}/qr/{pid}")
        assert await page.evaluate("document.documentElement.lang") == "zh-CN"
        # The image loads (the worker draws it a moment after the page opens; the page's
        # script swaps it in) and is a real, square QR image.
        await page.wait_for("document.getElementById('qr').naturalWidth > 0 && "
                            "document.getElementById('qr').complete")
        size = await page.evaluate("[document.getElementById('qr').naturalWidth, "
                                   "document.getElementById('qr').naturalHeight]")
        assert size[0] == size[1] >= 100
        await page.wait_for("document.getElementById('status').textContent === '等待扫码'")
        countdown = await page.wait_for(
            "/后过期/.test(document.getElementById('countdown').textContent) && "
            "document.getElementById('countdown').textContent")
        assert countdown.startswith("二维码 0:") or countdown.startswith("二维码 1:")
        assert "另一台设备" in await page.evaluate("document.body.innerText")
        # Mobile-first: nothing wider than the phone, the QR big enough to scan.
        assert await page.evaluate(
            "document.documentElement.scrollWidth <= window.innerWidth")
        shown = await page.evaluate("document.getElementById('qr').getBoundingClientRect().width")
        assert 250 <= shown <= 390
        await page.screenshot(ARTIFACTS / "qr-page-phone-waiting.png")

        (pending,) = site.webwx.pending_logins()
        site.webwx.scan(pending["uuid"], account)
        await page.wait_for(
            "document.getElementById('status').textContent === '已扫码，请在手机上确认'")
        site.webwx.confirm(pending["uuid"])
        await page.wait_for("document.getElementById('status').textContent === '已登录：小明'")
        assert await page.evaluate("document.getElementById('status').className") == "ok"
        assert await page.evaluate("document.getElementById('countdown').textContent") == (
            "自动回复已开始工作，可以关闭这个页面了")
        # Logged in: the "use another device" box and the steps are gone.
        assert await page.evaluate("document.getElementById('howto').hidden")
        assert "另一台设备" not in await page.evaluate("document.body.innerText")
        await page.screenshot(ARTIFACTS / "qr-page-phone-online.png")
        assert _real_problems(page) == []
    finally:
        await page.close()


async def test_qr_page_without_javascript_still_shows_the_image(site: Site,
                                                                browser: Browser) -> None:
    pid = await _start_qr_login(site, "bob")
    await until(lambda: _has_png(site, pid))  # the worker has drawn the QR
    page = await browser.new_page(**DESKTOP)  # type: ignore[arg-type]
    try:
        await page.set_javascript(False)
        await page.goto(f"{site.base_url}/qr/{pid}")
        await page.wait_for("document.getElementById('qr').complete && "
                            "document.getElementById('qr').naturalWidth > 0")
        assert await page.evaluate("document.getElementById('status').textContent") == "等待扫码"
        assert "分钟内有效" in await page.evaluate(
            "document.getElementById('countdown').textContent")
        await page.screenshot(ARTIFACTS / "qr-page-desktop-no-javascript.png")
    finally:
        await page.close()


async def _has_png(site: Site, pid: str) -> bool:
    return bool(await site.stores.redis.exists(site.stores.kv.key("qr", pid, "png")))


async def test_a_hostile_nickname_stays_text_in_the_browser(site: Site,
                                                            browser: Browser) -> None:
    account = site.webwx.add_account("<img src=x onerror=window.pwned=1>", friends=1)
    pid = await _start_qr_login(site, "carol")
    page = await browser.new_page(**PHONE)  # type: ignore[arg-type]
    try:
        await page.goto(f"{site.base_url}/qr/{pid}")
        pending = await until(lambda: site.webwx.pending_logins())
        site.webwx.scan(pending[0]["uuid"], account)
        site.webwx.confirm(pending[0]["uuid"])
        label = await page.wait_for(
            "document.getElementById('status').textContent.startsWith('已登录') && "
            "document.getElementById('status').textContent")
        assert label == "已登录：<img src=x onerror=window.pwned=1>"
        await page.goto(f"{site.base_url}/qr/{pid}")  # and rendered by the server
        assert await page.evaluate("document.getElementById('status').textContent") == label
        assert await page.evaluate("document.querySelectorAll('#status *').length") == 0
        assert await page.evaluate("window.pwned === undefined")
        assert _real_problems(page) == []
    finally:
        await page.close()
