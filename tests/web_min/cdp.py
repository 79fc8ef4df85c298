"""A small Chrome DevTools Protocol client for the browser tests.

Debian's ``chromium`` is started headless with ``--remote-debugging-port=0`` and driven
over its DevTools WebSocket with Tornado's own WebSocket client: no Playwright browser
download, no chromedriver version to keep in step, nothing but the browser itself and
what the project already depends on.  Only the handful of commands the tests need.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.websocket import WebSocketClientConnection, websocket_connect

# The flags that work on this kind of machine (root, no display, no network beyond
# loopback): no sandbox (root), no GPU, and nothing that phones home.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio",
    # Containers often have a tiny /dev/shm; a renderer that runs out of it crashes.
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
]
INSTALL_HINT = ("Chromium is needed for the browser tests and was not found. `make test` "
                "installs it (Debian package `chromium`); by hand: "
                "apt-get update && apt-get install -y chromium.  Or set WXR_CHROMIUM to "
                "a Chromium binary.")


def find_chromium() -> str:
    """The browser to use; fails the test (never skips it) when there is none."""
    configured = os.environ.get("WXR_CHROMIUM")
    if configured:
        if not os.access(configured, os.X_OK):
            pytest.fail(f"WXR_CHROMIUM={configured} is not an executable. {INSTALL_HINT}")
        return configured
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(INSTALL_HINT)


@dataclasses.dataclass
class ChromiumProcess:
    process: subprocess.Popen[bytes]
    ws_url: str
    profile: Path


@contextlib.contextmanager
def launch_chromium(profile: Path, startup_timeout: float = 30.0) -> Iterator[ChromiumProcess]:
    """Start Chromium with a fresh profile; stop it (and only it) afterwards."""
    profile.mkdir(parents=True, exist_ok=True)
    stderr_path = profile.parent / f"{profile.name}-stderr.log"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [find_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            # Its own process group: the renderer and utility processes it forks are
            # ended with it, and nothing else is.
            start_new_session=True,
        )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + startup_timeout
        while True:
            text = port_file.read_text() if port_file.exists() else ""
            if len(text.split()) >= 2:
                break
            if process.poll() is not None:
                pytest.fail(f"Chromium exited with {process.returncode} at start:\n"
                            f"{stderr_path.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"Chromium did not open its DevTools port in {startup_timeout} s")
            time.sleep(0.05)
        port, path = text.split()[:2]
        yield ChromiumProcess(process, f"ws://127.0.0.1:{port}{path}", profile)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    # Children that outlived the browser process are in its group, which we created.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


class CdpError(RuntimeError):
    pass


class Browser:
    """One DevTools connection; commands are matched to answers by id."""

    def __init__(self, ws: WebSocketClientConnection) -> None:
        self.ws = ws
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: list[tuple[str | None, asyncio.Queue[dict[str, Any]]]] = []
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, ws_url: str) -> Browser:
        ws = await asyncio.wait_for(websocket_connect(ws_url, max_message_size=256 << 20), 15)
        return cls(ws)

    async def _read(self) -> None:
        while True:
            raw = await self.ws.read_message()
            if raw is None:
                for future in self._waiting.values():
                    if not future.done():
                        future.set_exception(CdpError("DevTools connection closed"))
                return
            message = json.loads(raw)
            if "id" in message:
                future = self._waiting.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
                continue
            for session, queue in self._listeners:
                if session is None or message.get("sessionId") == session:
                    queue.put_nowait(message)

    async def send(self, method: str, params: dict[str, Any] | None = None, *,
                   session: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        if self._reader.done():
            raise CdpError(f"{method}: DevTools connection closed")
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method,
                                   "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._next_id] = future
        await self.ws.write_message(json.dumps(message))
        answer = await asyncio.wait_for(future, timeout)
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def listen(self, session: str | None) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._listeners.append((session, queue))
        return queue

    async def new_page(self, *, width: int, height: int, mobile: bool,
                       scale: float = 1.0) -> Page:
        """A tab in a fresh browser context (its own cookies and cache)."""
        context = (await self.send("Target.createBrowserContext"))["browserContextId"]
        target = (await self.send("Target.createTarget",
                                  {"url": "about:blank", "browserContextId": context}))
        session = (await self.send("Target.attachToTarget",
                                   {"targetId": target["targetId"], "flatten": True}))
        page = Page(self, session["sessionId"], target["targetId"], context)
        await page.start(width=width, height=height, mobile=mobile, scale=scale)
        return page

    async def close(self) -> None:
        """Disconnect; the browser itself stays up for the next test (the process
        fixture stops it)."""
        self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class Page:
    def __init__(self, browser: Browser, session: str, target: str, context: str) -> None:
        self.browser = browser
        self.session = session
        self.target = target
        self.context = context
        self.events = browser.listen(session)
        self.problems: list[str] = []  # script errors and console errors, as seen

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, session=self.session)

    async def start(self, *, width: int, height: int, mobile: bool, scale: float) -> None:
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send("Log.enable")
        await self.send("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": height, "deviceScaleFactor": scale,
                         "mobile": mobile})
        if mobile:
            await self.send("Emulation.setTouchEmulationEnabled", {"enabled": True})

    def _collect(self) -> list[dict[str, Any]]:
        seen = []
        while not self.events.empty():
            event = self.events.get_nowait()
            seen.append(event)
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                self.problems.append(f"exception: {details.get('text')} "
                                     f"{details.get('exception', {}).get('description', '')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                self.problems.append(f"console.error: {params.get('args')}")
            elif method == "Log.entryAdded":
                entry = params.get("entry", {})
                if entry.get("level") == "error":
                    self.problems.append(f"log: {entry.get('text')} {entry.get('url', '')}")
        return seen

    async def goto(self, url: str, timeout: float = 20.0) -> None:
        self._collect()
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CdpError(f"navigation to {url} failed: {result['errorText']}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.evaluate("document.readyState") == "complete" and \
                    await self.evaluate("location.href") == url:
                return
            await asyncio.sleep(0.05)
        raise CdpError(f"{url} did not finish loading in {timeout} s")

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate",
                                 {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise CdpError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 15.0) -> Any:
        """Poll ``expression`` in the page until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = await self.evaluate(expression)
            if last:
                return last
            await asyncio.sleep(0.1)
        raise AssertionError(f"page: {expression!r} still {last!r} after {timeout} s")

    async def set_javascript(self, enabled: bool) -> None:
        await self.send("Emulation.setScriptExecutionDisabled", {"value": not enabled})

    async def screenshot(self, path: Path) -> Path:
        data = (await self.send("Page.captureScreenshot", {"format": "png"}))["data"]
        await asyncio.to_thread(_write, path, base64.b64decode(data))
        return path

    def errors(self) -> list[str]:
        self._collect()
        return list(self.problems)

    async def close(self) -> None:
        await self.browser.send("Target.closeTarget", {"targetId": self.target})
        await self.browser.send("Target.disposeBrowserContext",
                                {"browserContextId": self.context})
