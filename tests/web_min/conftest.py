"""Fixtures for the JSON API: a running app, a cookie-keeping client, ready accounts.

The app hashes passwords with bcrypt cost 4 (``password_rounds``, a test-only knob): a
cost-12 hash takes 0.25 s and these tests log in hundreds of times.  The tests that are
about the cost itself use the product default.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from typing import Any

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse

from config import Settings
from config.settings import LOOPBACK_PROXIES
from store import Stores
from tests.conftest import Web, remember_secret
from wxreply.app import build_app

TEST_ROUNDS = 4
PASSWORD = "correct horse battery"
remember_secret(PASSWORD)  # the log-hygiene check of the whole suite looks for it


@dataclasses.dataclass
class Answer:
    status: int
    body: dict[str, Any]
    response: HTTPResponse

    @property
    def code(self) -> int:
        return int(self.body["code"])

    def cookie(self, name: str) -> str | None:
        """The raw Set-Cookie header for ``name`` (flags included), if set."""
        for header in self.response.headers.get_list("Set-Cookie"):
            if header.split("=", 1)[0].strip() == name:
                return header
        return None


class Client:
    """A browser-like API client: keeps cookies, echoes the CSRF token when it has one."""

    def __init__(self, base_url: str, ip: str | None = None) -> None:
        self.base_url = base_url
        self.cookies: dict[str, str] = {}
        # Sent as X-Real-IP, which the app believes because the connection comes from
        # loopback, a trusted proxy in these tests (WXR_TRUST_PROXY=1, as behind nginx).
        self.ip = ip
        self.http = AsyncHTTPClient()

    @property
    def csrf(self) -> str | None:
        return self.cookies.get("csrftoken")

    async def call(self, method: str, path: str, *, json_body: Any = None,
                   form: list[tuple[str, str]] | dict[str, str] | None = None,
                   raw: bytes | None = None, content_type: str | None = None,
                   headers: dict[str, str] | None = None, csrf: bool = True) -> Answer:
        body: bytes | None = None
        all_headers: dict[str, str] = {}
        if json_body is not None:
            body = json.dumps(json_body, ensure_ascii=False).encode()
            all_headers["Content-Type"] = "application/json"
        elif form is not None:
            body = urllib.parse.urlencode(form).encode()
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif raw is not None:
            body = raw
        if content_type is not None:
            all_headers["Content-Type"] = content_type
        if self.cookies:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if csrf and self.csrf:
            all_headers["X-CSRF-Token"] = self.csrf
        if self.ip:
            all_headers["X-Real-IP"] = self.ip
        all_headers.update(headers or {})
        if body is None and method in ("POST", "PUT"):
            body = b""
        request = HTTPRequest(self.base_url + path, method=method, body=body,
                              headers=all_headers, request_timeout=20,
                              allow_nonstandard_methods=True)
        response = await self.http.fetch(request, raise_error=False)
        for header in response.headers.get_list("Set-Cookie"):
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel.value == "" or morsel["max-age"] == "0" or (
                        morsel["expires"] and "1970" in morsel["expires"]):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        assert response.headers.get("Content-Type", "").startswith("application/json"), (
            response.code, response.body[:200])
        return Answer(response.code, json.loads(response.body), response)

    async def get(self, path: str, **kwargs: Any) -> Answer:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Answer:
        return await self.call("POST", path, **kwargs)


async def serve_app(app: tornado.web.Application) -> tuple[Web, tornado.httpserver.HTTPServer]:
    """Like ``wxreply serve``: 1 MiB body cap, no ``xheaders`` (the app itself decides
    whom to believe; see ``app_settings``)."""
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(app, xheaders=False, max_body_size=1 << 20)
    server.add_sockets(sockets)
    return Web(f"http://127.0.0.1:{sockets[0].getsockname()[1]}", app), server


def behind_proxy(settings: Settings) -> Settings:
    """As behind nginx on this host: X-Real-IP from loopback names the client, so tests
    can be several clients."""
    return dataclasses.replace(settings, trust_proxy=LOOPBACK_PROXIES)


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    return behind_proxy(settings)


@pytest.fixture
async def api_web(stores: Stores, app_settings: Settings) -> AsyncIterator[Web]:
    web, server = await serve_app(build_app(app_settings, stores, password_rounds=TEST_ROUNDS))
    yield web
    server.stop()
    await server.close_all_connections()


@pytest.fixture
def client(api_web: Web) -> Client:
    return Client(api_web.base_url)


@pytest.fixture
def new_client(api_web: Web) -> Any:
    """``new_client()`` → another browser (its own cookies)."""
    return lambda: Client(api_web.base_url)


class Accounts:
    """Make followers, codes and registered accounts the way a user would get them."""

    def __init__(self, stores: Stores, base_url: str) -> None:
        self.stores = stores
        self.base_url = base_url
        self._n = 0

    async def code(self, openid: str) -> str:
        """A registration code as 验证码 shows it: ``<user id>-<6 digits>``."""
        user, _ = await self.stores.users.get_or_create(openid)
        code = await self.stores.kv.issue_code("register", openid)
        remember_secret(code)
        return f"{user.uid}-{code}"

    async def register(self, username: str, password: str = PASSWORD,
                       openid: str | None = None) -> int:
        self._n += 1
        remember_secret(password)
        openid = openid or f"o-web-{username}-{self._n:010d}"
        answer = await Client(self.base_url).post("/account/register", json_body={
            "username": username, "password": password,
            "last_name": await self.code(openid)})
        assert answer.code == 200, answer.body
        return int(answer.body["data"]["userid"])

    async def logged_in(self, username: str, password: str = PASSWORD) -> Client:
        """A new user's own browser, registered and logged in."""
        await self.register(username, password)
        return await self.logged_in_existing(username, password)

    async def logged_in_existing(self, username: str, password: str = PASSWORD) -> Client:
        browser = Client(self.base_url)
        answer = await browser.post("/account/login",
                                    json_body={"username": username, "password": password})
        assert answer.code == 200, answer.body
        return browser


@pytest.fixture
def accounts(stores: Stores, api_web: Web) -> Accounts:
    return Accounts(stores, api_web.base_url)
