"""Shared fixtures: real Redis and MongoDB-wire servers, a loopback-only network.

A session starts one private ``redis-server`` and one ``secantusd-py`` on free ports in
temp dirs (or uses ``WXR_TEST_REDIS_URL`` / ``WXR_TEST_MONGO_URL``).  Each test gets its
own Mongo database and Redis key prefix, so tests never see each other's data.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
import platform
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web

from config import Settings
from mpbot.simulator import Simulator
from store import Stores
from store.embedded import EmbeddedMongo, EmbeddedRedis
from store.models import RuleLimits

pytest_plugins = ["tests.fakes.webwx_fixtures", "tests.fakes.mpapi_fixtures", "tests.e2e.botrig"]

# -- network guard ---------------------------------------------------------------------

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_violations: list[str] = []


def _is_loopback(host: object) -> bool:
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class NonLoopbackConnection(OSError):
    """Raised (and recorded, so the test fails even if the caller swallows it)."""


def _refuse(what: str) -> None:
    _violations.append(what)
    raise NonLoopbackConnection(f"test tried to reach a non-loopback address: {what}")


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self: socket.socket, address: object) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):  # type: ignore[index]
        _refuse(repr(address))
    return _real_connect(self, address)  # type: ignore[arg-type]


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):  # type: ignore[index]
        _refuse(repr(address))
    return _real_connect_ex(self, address)  # type: ignore[arg-type]


def _guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> list:  # type: ignore[type-arg]
    if isinstance(host, bytes):
        host = host.decode()
    if host is not None and not _is_loopback(host):
        _refuse(f"DNS lookup of {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
socket.getaddrinfo = _guarded_getaddrinfo


@pytest.fixture(autouse=True)
def _no_network_beyond_loopback() -> Iterator[None]:
    start = len(_violations)
    yield
    tried = _violations[start:]
    assert not tried, f"test reached beyond 127.0.0.1: {tried}"


# -- log hygiene: no secrets, codes or full openids in any log of the whole suite -------

ARTIFACTS = Path(__file__).parents[1] / "test-artifacts"
_log_lines: list[str] = []
# Secrets the tests use; tests add one-time codes and passwords as they see them.
SECRETS: set[str] = {"test-secret-key", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
                     "fake-app-secret", "demo-app-secret"}
# Openids used by the tests: "o-owner-0000…", "o-fleet-0001", "oWXR_local_tester_…".
OPENID = re.compile(r"\bo(?:-[a-z]+)+-\d{4,}\b|\boWXR_local_tester_\d+"
                    r"|oyORnuP8q7ou2gfYjqLzSIWZf0rs")


def remember_secret(value: str) -> None:
    """A code or password a test saw: it must never show up in a log."""
    if value:
        SECRETS.add(value)


class _Collect(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            _log_lines.append(self.format(record))
        except Exception:  # noqa: BLE001 - a bad record must not break the suite
            _log_lines.append(str(record.msg))


def pytest_configure(config: pytest.Config) -> None:
    # INFO, as production runs: DEBUG would make pymongo format every command.
    root = logging.getLogger()
    root.addHandler(_Collect(level=logging.INFO))
    root.setLevel(logging.INFO)


def _contains_token(text: str, value: str) -> bool:
    """`value` in `text` as a whole token: a six-digit code inside a longer random
    number (a fake server's device id, say) is a coincidence, not a leak."""
    start = text.find(value)
    while start != -1:
        end = start + len(value)
        before = text[start - 1] if start else " "
        after = text[end] if end < len(text) else " "
        if not before.isalnum() and not after.isalnum():
            return True
        start = text.find(value, start + 1)
    return False


def _leaks(text: str) -> list[str]:
    found = [f"secret {value[:3]}…" for value in SECRETS if _contains_token(text, value)]
    found += [f"openid {m.group(0)[:6]}…" for m in OPENID.finditer(text)]
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any log line — ours, or a subprocess's log file — leaks."""
    problems: list[str] = []
    for line in _log_lines:
        if leaks := _leaks(line):
            problems.append(f"log: {leaks} in {line[:160]!r}")
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        base = factory.getbasetemp()
        for path in list(base.rglob("*.log")) + list(base.rglob("*.out")):
            text = path.read_text(errors="replace")
            for line in text.splitlines():
                if leaks := _leaks(line):
                    problems.append(f"{path.name}: {leaks} in {line[:160]!r}")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "log-hygiene.json").write_text(json.dumps(
        {"log_lines_checked": len(_log_lines), "problems": problems[:200]}, indent=2))
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"LOG HYGIENE: {len(problems)} leak(s):", red=True)
            for problem in problems[:20]:
                reporter.write_line("  " + problem, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- figures for docs/RELIABILITY.md -------------------------------------------------


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A dict the test fills with its figures; written to
    ``test-artifacts/reliability/<test>.json`` when the test ends.  A test that failed (in
    its body, or in a fixture set up after this one) is written too, with ``failed`` (the
    first line of its error), so that the report says FAILED and why instead of "not
    run"."""
    data: dict[str, Any] = {}
    yield data
    report = getattr(request.node, "rep_call", None) or getattr(request.node, "rep_setup", None)
    if report is None or report.skipped or (report.when == "setup" and report.passed):
        return
    _write_figures(request.node, data, report)


def _write_figures(item: pytest.Item, data: dict[str, Any], report: pytest.TestReport) -> None:
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        reason = (crash.message if crash is not None else str(report.longrepr)).strip()
        if report.when != "call":
            reason = f"error in {report.when}: {reason}"
        data = {"failed": reason.splitlines()[0][:300] if reason else "failed", **data}
    out = ARTIFACTS / "reliability"
    out.mkdir(parents=True, exist_ok=True)
    record = {"test": item.nodeid,
              "mode": "long" if os.environ.get("WXR_RELIABILITY") == "long" else "short",
              "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                         f"Python {platform.python_version()}", **data}
    (out / f"{item.name}.json").write_text(json.dumps(record, ensure_ascii=False, indent=2))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when in ("setup", "call"):
        setattr(item, f"rep_{report.when}", report)
    # A fixture set up before ``figures`` failed: the fixture never ran, the test did not
    # either, and the report must still say FAILED, not "not run".
    if (report.when == "setup" and report.failed and "figures" in getattr(item, "fixturenames", ())
            and "figures" not in getattr(item, "funcargs", {})):
        _write_figures(item, {}, report)


# -- servers ---------------------------------------------------------------------------


class Servers:
    def __init__(self, mongo_url: str, redis_url: str) -> None:
        self.mongo_url = mongo_url
        self.redis_url = redis_url


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    started: list[EmbeddedRedis | EmbeddedMongo] = []
    redis_url = os.environ.get("WXR_TEST_REDIS_URL")
    mongo_url = os.environ.get("WXR_TEST_MONGO_URL")
    base = tmp_path_factory.mktemp("servers")
    try:
        if not redis_url:
            redis = EmbeddedRedis(base / "redis").start()
            started.append(redis)
            redis_url = redis.url
            remember_secret(redis.password)  # the stores' passwords never reach a log
        if not mongo_url:
            mongo = EmbeddedMongo(base / "mongo").start()
            started.append(mongo)
            mongo_url = mongo.url
            remember_secret(mongo.password)
        yield Servers(mongo_url, redis_url)
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def namespace() -> str:
    """A unique name for this test's Mongo database and Redis key prefix."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def limits() -> RuleLimits:
    return RuleLimits()


@pytest.fixture
async def stores(servers: Servers, namespace: str, limits: RuleLimits) -> AsyncIterator[Stores]:
    st = Stores.connect(servers.mongo_url, servers.redis_url, db_name=namespace,
                        prefix=f"{namespace}:", limits=limits)
    await st.ensure_indexes()
    try:
        yield st
    finally:
        try:
            # A long run's database takes more than the stores' 3-s budget to drop on a
            # loaded machine.
            with pymongo.timeout(60):
                await st.mongo.drop_database(namespace)
            keys = [k async for k in st.redis.scan_iter(match=f"{namespace}:*", count=500)]
            if keys:
                await st.redis.delete(*keys)
        finally:
            await st.close()  # else its sockets leak into the next test


@pytest.fixture
def private_servers(tmp_path: Path) -> Iterator[tuple[EmbeddedRedis, EmbeddedMongo]]:
    """A Redis and a Mongo of this test's own, for tests that stop or kill them."""
    redis = EmbeddedRedis(tmp_path / "p-redis")
    mongo = EmbeddedMongo(tmp_path / "p-mongo")
    try:
        redis.start()
        mongo.start()
        yield redis, mongo
    finally:
        redis.stop()
        mongo.stop()


# -- the web app, in the test's own event loop ---------------------------------------

TEST_TOKEN = "testtoken"
TEST_AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
TEST_APPID = "wx2c2769f8efd9abc2"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "var", secret_key="test-secret-key", mp_token=TEST_TOKEN)


@pytest.fixture
def safe_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, mp_aes_key=TEST_AES_KEY, mp_appid=TEST_APPID)


class Web:
    def __init__(self, base_url: str, app: tornado.web.Application) -> None:
        self.base_url = base_url
        self.app = app


async def start_web(app: tornado.web.Application) -> tuple[Web, tornado.httpserver.HTTPServer]:
    sock = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(app, max_body_size=1 << 20)
    server.add_sockets(sock)
    port = sock[0].getsockname()[1]
    return Web(f"http://127.0.0.1:{port}", app), server


@pytest.fixture
async def web(stores: Stores, settings: Settings) -> AsyncIterator[Web]:
    from wxreply.app import build_app

    web, server = await start_web(build_app(settings, stores))
    yield web
    server.stop()
    await server.close_all_connections()


@pytest.fixture
def sim(web: Web, settings: Settings) -> Simulator:
    return Simulator(f"{web.base_url}/wechat", settings.mp_token, settings.mp_aes_key,
                     settings.mp_appid)


Chat = Callable[..., Awaitable[str]]


@pytest.fixture
def chat(sim: Simulator) -> Chat:
    """``await chat("添加 苹果 梨子")`` → the reply text, as the user would see it."""

    async def say(text: str, openid: str = "o-tester-0000000000000001") -> str:
        delivery = await sim.send(text, openid)
        assert delivery.status == 200, delivery.raw
        for code in re.findall(r"验证码：(?:\d+-)?(\d{6})", delivery.text):
            remember_secret(code)
        return delivery.text

    return say
