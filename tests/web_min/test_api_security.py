"""The API under attack: IDOR, operator injection, XSS, CSRF, lockout, hostile bodies,
secrets in logs, and a store that is down."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
import urllib.parse
from typing import Any

import bcrypt
import pytest
import tornado.web
from freezegun import freeze_time

from config import Settings
from store import Stores
from tests.conftest import Servers
from tests.web_min.conftest import PASSWORD, Accounts, Client, behind_proxy, serve_app
from web_min.accounts import (
    DEFAULT_BCRYPT_ROUNDS,
    LOGIN_FAILURES_PER_IP,
    LOGIN_FAILURES_PER_USERNAME,
    LOGIN_LOCKOUT_S,
    MAX_PENDING_HASHES,
    HasherBusy,
    Passwords,
)
from wxreply.app import build_app

# -- IDOR ----------------------------------------------------------------------------


async def test_user_a_can_never_see_or_change_user_bs_rules(accounts: Accounts,
                                                            stores: Stores) -> None:
    alice = await accounts.logged_in("alice")
    bob = await accounts.logged_in("bob")
    await bob.post("/database/add", json_body={"b1": "bob 1", "b2": "bob 2", "b3": "bob 3"})
    await alice.post("/database/add", json_body={"a1": "alice 1"})
    bob_before = (await bob.get("/database/show")).body

    bob_uid = (await bob.get("/account/info")).body["data"]["userid"]
    # Whatever Alice names, she gets her own rules: the user comes from the session only.
    for query in ("", f"?id={bob_uid}", f"?uid={bob_uid}", f"?user={bob_uid}&id={bob_uid}"):
        shown = await alice.get(f"/database/show{query}")
        assert shown.body["data"] == {"01": {"a1": "alice 1"}}

    for number in ("2", "03", "02"):
        deleted = await alice.get(f"/database/delete/?id={number}")
        assert (deleted.status, deleted.code) == (200, -5)
        assert "没有编号为" in deleted.body["message"]
        assert (await alice.call("DELETE", f"/database/delete/?id={number}")).code == -5
        updated = await alice.post(f"/database/update/?id={number}",
                                   json_body={"pwned": "by alice"})
        assert updated.code == -5
    # Bob's rule 01 and Alice's rule 01 are different rules: Alice's delete of 01 is hers.
    assert (await alice.get("/database/delete/?id=01")).body["data"] == {"01": {"a1": "alice 1"}}
    assert (await bob.get("/database/show")).body == bob_before
    assert await stores.rules.count(bob_uid) == 3


# -- operator injection ------------------------------------------------------------

OPERATORS: list[Any] = [{"$ne": None}, {"$gt": ""}, {"$regex": ".*"}, {"$where": "1"},
                        ["$ne", None], {"$in": ["alice"]}]


@pytest.mark.parametrize("operator", OPERATORS)
async def test_no_operator_reaches_a_query(accounts: Accounts, client: Client,
                                           stores: Stores, operator: Any) -> None:
    await accounts.register("alice")
    login = await client.post("/account/login",
                              json_body={"username": operator, "password": operator})
    assert login.code == -4
    login = await client.post("/account/login",
                              json_body={"username": "alice", "password": operator})
    assert login.code == -4
    assert client.cookies == {}
    reset = await client.post("/account/reset", json_body={
        "username": "alice", "code": operator, "password": "new password 1"})
    assert reset.code == -4
    register = await client.post("/account/register", json_body={
        "username": "mallory", "password": PASSWORD, "last_name": operator})
    assert register.code == -4
    assert await stores.users.by_username("mallory") is None

    me = await accounts.logged_in("carol")
    added = await me.post("/database/add", json_body={"a": operator})
    assert added.code == -4
    updated = await me.post("/database/update/?id=1", json_body={"a": operator})
    assert updated.code == -4
    assert (await me.get("/database/show")).body["data"] == {}


async def test_operator_looking_keywords_are_just_text(accounts: Accounts) -> None:
    me = await accounts.logged_in("dave")
    added = await me.post("/database/add", json_body={"$where": "1", "$ne": "null"})
    assert added.code == 200
    assert (await me.get("/database/show")).body["data"] == {
        "01": {"$where": "1"}, "02": {"$ne": "null"}}


# -- XSS -------------------------------------------------------------------------------

SCRIPT = "<script>alert(1)</script>"


async def test_a_script_keyword_is_never_markup(accounts: Accounts, stores: Stores) -> None:
    me = await accounts.logged_in("erin")
    added = await me.post("/database/add", json_body={SCRIPT: "<img src=x onerror=alert(1)>"})
    assert added.code == 200
    shown = await me.get("/database/show")
    assert shown.body["data"] == {"01": {SCRIPT: "<img src=x onerror=alert(1)>"}}
    clash = await me.post("/database/add", json_body={SCRIPT: "again"})
    assert clash.code == -2
    for answer in (added, shown, clash):
        raw = answer.response.body
        assert b"<" not in raw
        assert b">" not in raw
        assert b"\\u003cscript\\u003e" in raw
        assert answer.response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert answer.response.headers["X-Content-Type-Options"] == "nosniff"


# -- CSRF ------------------------------------------------------------------------------

WRITES = [
    ("POST", "/database/add", {"新": "规则"}),
    ("POST", "/database/update/?id=1", {"苹果": "被改了"}),
    ("GET", "/database/delete/?id=1", None),
    ("DELETE", "/database/delete/?id=1", None),
    ("POST", "/autoreply/off", None),
    ("POST", "/autoreply/on", None),
]


async def _state(me: Client) -> tuple[Any, Any]:
    info = (await me.get("/account/info")).body["data"]
    return (await me.get("/database/show")).body["data"], info["autoreply"]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
async def test_writes_without_the_csrf_token_are_refused(accounts: Accounts, new_client: Any,
                                                         method: str, path: str,
                                                         body: Any) -> None:
    me = await accounts.logged_in("frank")
    await me.post("/database/add", json_body={"苹果": "梨子"})
    if path == "/autoreply/on":
        await me.post("/autoreply/off")
    before = await _state(me)
    other = await accounts.logged_in("grace")
    forged_cookie_pair = {**me.cookies, "csrftoken": "attacker-chosen"}

    attempts = [
        {"csrf": False},                                            # no token at all
        {"csrf": False, "headers": {"X-CSRF-Token": "wrong"}},       # a wrong one
        {"csrf": False, "headers": {"X-CSRF-Token": other.csrf}},    # another session's
        {"csrf": False, "headers": {"X-CSRF-Token": ""}},
    ]
    for attempt in attempts:
        answer = await me.call(method, path, json_body=body, **attempt)
        assert answer.status == 403, (attempt, answer.body)
        assert answer.code == -4
        assert "CSRF" in answer.body["message"]
    # Double-submit with a cookie the attacker planted does not help: the token is
    # checked against the session, not against the cookie.
    saved = me.cookies
    me.cookies = forged_cookie_pair
    planted = await me.call(method, path, json_body=body, csrf=False,
                            headers={"X-CSRF-Token": "attacker-chosen"})
    assert planted.status == 403
    me.cookies = saved
    assert await _state(me) == before
    # And with the token, the same request works.
    assert (await me.call(method, path, json_body=body)).code == 200


async def test_the_csrf_token_may_come_in_body_query_or_either_header(
        accounts: Accounts) -> None:
    me = await accounts.logged_in("heidi")
    token = me.csrf
    assert token
    json_field = await me.post("/database/add", csrf=False,
                               json_body={"csrf_token": token, "a": "1"})
    assert json_field.body["data"] == {"01": {"a": "1"}}  # the token is not a keyword
    form_field = await me.post("/database/add", csrf=False,
                               form=[("csrf_token", token), ("b", "2")])
    assert form_field.body["data"] == {"02": {"b": "2"}}
    query = await me.get(f"/database/delete/?id=1&csrf_token={token}", csrf=False)
    assert query.code == 200
    django_header = await me.post("/autoreply/off", csrf=False, headers={"X-CSRFToken": token})
    assert django_header.code == 200


async def test_reads_and_account_endpoints_need_no_csrf_token(accounts: Accounts) -> None:
    me = await accounts.logged_in("ivan")
    assert (await me.get("/database/show", csrf=False)).code == 200
    assert (await me.get("/account/info", csrf=False)).code == 200
    assert (await me.get("/wechat/testlogin", csrf=False)).code == 200
    assert (await me.get("/account/logout", csrf=False)).code == 200


# -- lockout ---------------------------------------------------------------------------


async def _login(client: Client, username: str, password: str) -> Any:
    return await client.post("/account/login",
                             json_body={"username": username, "password": password})


async def test_lockout_after_5_failures_and_its_expiry(accounts: Accounts, api_web: Any) -> None:
    await accounts.register("judy")
    with freeze_time("2026-05-01 08:00:00", real_asyncio=True) as frozen:
        guesser = Client(api_web.base_url, ip="127.0.1.1")
        for attempt in range(LOGIN_FAILURES_PER_USERNAME - 1):
            answer = await _login(guesser, "judy", f"guess {attempt}")
            assert (answer.status, answer.code) == (200, -3)
        fifth = await _login(guesser, "judy", "guess 4")
        assert (fifth.status, fifth.code) == (429, -3)
        assert "15 分钟" in fifth.body["message"]
        assert "重置密码" in fifth.body["message"]  # the way out is named
        # Locked even for the right password from that address: the lock is no oracle.
        locked = await _login(guesser, "judy", PASSWORD)
        assert (locked.status, locked.code) == (429, -3)
        assert int(locked.response.headers["Retry-After"]) == LOGIN_LOCKOUT_S + 1
        assert guesser.cookies == {}

        frozen.tick(LOGIN_LOCKOUT_S - 60)
        still = await _login(guesser, "judy", PASSWORD)
        assert still.status == 429
        assert "1 分钟" in still.body["message"]

        frozen.tick(61)
        free = await _login(guesser, "judy", PASSWORD)
        assert (free.status, free.code) == (200, 200)
        # A success starts the count afresh: four more failures do not lock.
        for attempt in range(LOGIN_FAILURES_PER_USERNAME - 1):
            assert (await _login(guesser, "judy", f"again {attempt}")).status == 200
        assert (await _login(guesser, "judy", PASSWORD)).code == 200


async def test_lockout_per_address(accounts: Accounts, api_web: Any) -> None:
    names = [f"spray{i}" for i in range(LOGIN_FAILURES_PER_IP)]
    for name in names:
        await accounts.register(name)
    with freeze_time("2026-05-01 08:00:00", real_asyncio=True) as frozen:
        sprayer = Client(api_web.base_url, ip="127.0.3.7")
        answers = [await _login(sprayer, name, "Password1") for name in names]
        assert [a.status for a in answers] == [200] * (LOGIN_FAILURES_PER_IP - 1) + [429]
        # From that address, nothing (not even the right password) for 15 minutes …
        assert (await _login(sprayer, "spray1", PASSWORD)).status == 429
        # … while the users themselves, elsewhere, are not locked out.
        assert (await _login(Client(api_web.base_url, ip="127.0.4.1"), "spray1",
                             PASSWORD)).code == 200
        frozen.tick(LOGIN_LOCKOUT_S + 1)
        assert (await _login(sprayer, "spray1", PASSWORD)).code == 200


async def test_code_guessing_is_limited_per_address(accounts: Accounts, api_web: Any,
                                                    stores: Stores) -> None:
    guesser = Client(api_web.base_url, ip="127.0.3.9")
    answers = [await guesser.post("/account/register", json_body={
        "username": f"guess{i}", "password": PASSWORD, "last_name": f"{i:06d}"})
        for i in range(11)]
    assert [a.code for a in answers] == [-1] * 11
    assert [a.status for a in answers] == [200] * 10 + [429]
    # Even a right code is refused from there now.
    code = await accounts.code("o-nina-0000000000000000001")
    locked = await guesser.post("/account/register", json_body={
        "username": "nina", "password": PASSWORD, "last_name": code})
    assert locked.status == 429
    assert await stores.users.by_username("nina") is None
    assert (await guesser.post("/account/reset", json_body={
        "username": "nina", "code": code, "password": PASSWORD})).status == 429


# -- cookie flags behind https -----------------------------------------------------------


@pytest.mark.parametrize("app_settings", ["https"], indirect=True)
async def test_cookies_are_secure_behind_https(accounts: Accounts, client: Client) -> None:
    await accounts.register("oscar")
    login = await _login(client, "oscar", PASSWORD)
    for name in ("wxr_session", "csrftoken"):
        header = login.cookie(name)
        assert header is not None
        assert "secure" in [part.strip().lower() for part in header.split(";")]


@pytest.fixture
def app_settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    if getattr(request, "param", "") == "https":
        return behind_proxy(dataclasses.replace(settings, public_url="https://wx.example.com"))
    return behind_proxy(settings)


# -- bcrypt ------------------------------------------------------------------------------


async def test_product_hashes_use_cost_12_off_the_event_loop(stores: Stores,
                                                             settings: Settings) -> None:
    assert DEFAULT_BCRYPT_ROUNDS >= 12
    web, server = await serve_app(build_app(settings, stores))  # the product default
    try:
        accounts = Accounts(stores, web.base_url)
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.ensure_future(ticker())
        started = time.monotonic()
        await accounts.register("pat")
        elapsed = time.monotonic() - started
        stop.set()
        await ticking
        user = await stores.users.by_username("pat")
        assert user is not None
        assert user.password_hash is not None
        assert user.password_hash.startswith(b"$2b$12$")
        # The loop kept running while the hash was computed (≈ 0.25 s on a thread).
        assert ticks >= elapsed / 0.01 * 0.5
        assert (await _login(Client(web.base_url), "pat", PASSWORD)).code == 200
    finally:
        server.stop()
        await server.close_all_connections()


async def test_hashing_runs_on_its_own_bounded_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    names: list[str] = []
    passwords = Passwords(rounds=4)
    original = bcrypt.hashpw

    def spy(password: bytes, salt: bytes) -> bytes:
        names.append(threading.current_thread().name)
        return original(password, salt)

    monkeypatch.setattr(bcrypt, "hashpw", spy)
    await passwords.hash("x" * 8)
    assert len(names) == 1
    assert names[0].startswith("wxr-bcrypt")

    passwords._pending = MAX_PENDING_HASHES  # as if that many were queued
    with pytest.raises(HasherBusy):
        await passwords.hash("y" * 8)


async def test_weaker_hashes_are_upgraded_at_login(stores: Stores, settings: Settings) -> None:
    weak_web, weak_server = await serve_app(build_app(settings, stores, password_rounds=4))
    await Accounts(stores, weak_web.base_url).register("quinn")
    weak_server.stop()
    web, server = await serve_app(build_app(settings, stores, password_rounds=5))
    try:
        assert (await _login(Client(web.base_url), "quinn", PASSWORD)).code == 200
        user = await stores.users.by_username("quinn")
        assert user is not None
        assert user.password_hash is not None
        assert user.password_hash.startswith(b"$2b$05$")
    finally:
        server.stop()
        await server.close_all_connections()


# -- hostile input -------------------------------------------------------------------------

HUGE = "长" * 100_000
HOSTILE_VALUES: list[Any] = [HUGE, {"$ne": None}, {"a": {"b": {"c": {}}}}, ["a", "b"], [],
                             123456, 1e308, -1, None, True]
FIELDS = {
    "/account/register": ["username", "password", "last_name"],
    "/account/login": ["username", "password"],
    "/account/reset": ["username", "code", "password"],
}


async def _snapshot(stores: Stores) -> list[Any]:
    users = [doc async for doc in stores.db["users"].find({}).sort("_id", 1)]
    rules = [doc async for doc in stores.db["rules"].find({}, {"_id": 0}).sort("no", 1)]
    return [users, rules]


@pytest.mark.parametrize("path", list(FIELDS))
async def test_hostile_values_in_every_account_field(accounts: Accounts, client: Client,
                                                     stores: Stores, path: str) -> None:
    await accounts.register("rita")
    valid = {"username": "rita", "password": "new password 1",
             "last_name": await accounts.code("o-sam-00000000000000000001"), "code": "123456"}
    before = await _snapshot(stores)
    for field in FIELDS[path]:
        for value in HOSTILE_VALUES:
            body = {name: valid[name] for name in FIELDS[path]}
            body[field] = value
            answer = await client.post(path, json_body=body)
            assert (answer.status, answer.code) == (200, -4), (field, str(value)[:40],
                                                                answer.body)
            assert answer.body["message"].startswith("参数错误：")
            assert len(answer.response.body) < 1000  # the message does not echo the input
    assert await _snapshot(stores) == before
    assert client.cookies == {}


async def test_hostile_values_in_rules(accounts: Accounts, stores: Stores) -> None:
    me = await accounts.logged_in("sam")
    await me.post("/database/add", json_body={"苹果": "梨子"})
    before = await _snapshot(stores)
    for value in HOSTILE_VALUES:
        for path in ("/database/add", "/database/update/?id=1"):
            answer = await me.post(path, json_body={"香蕉": value})
            assert (answer.status, answer.code) == (200, -4), (path, str(value)[:40])
    huge_keyword = await me.post("/database/add", json_body={HUGE: "x"})
    assert huge_keyword.code == -4
    for number in ("9" * 100, HUGE[:50], "1e3", " 1", "1\x00", "٣"):
        query = urllib.parse.urlencode({"id": number})
        assert (await me.get(f"/database/delete/?{query}")).code == -4, number
    assert await _snapshot(stores) == before


BAD_BODIES: list[tuple[str, bytes, str | None]] = [
    ("not utf-8", b'{"username": "\xff\xfe", "password": "x"}', "application/json"),
    ("not utf-8 form", b"username=%FF%FE&password=x", "application/x-www-form-urlencoded"),
    ("raw bytes form", b"username=\xff\xfe&password=x", "application/x-www-form-urlencoded"),
    ("invalid json", b'{"username": "alice", ', "application/json"),
    ("json array", b'["username", "password"]', "application/json"),
    ("json string", b'"username"', "application/json"),
    ("json number", b"12", "application/json"),
    ("json null", b"null", "application/json"),
    ("NaN", b'{"username": NaN}', "application/json"),
    ("lone surrogate", b'{"username": "\\ud800abc", "password": "x"}', "application/json"),
    ("deep nesting", b'{"username": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
     "application/json"),
    ("huge number", b'{"username": ' + b"9" * 10_000 + b"}", "application/json"),
    ("1 MB", b'{"username": "' + b"a" * 1_000_000 + b'"}', "application/json"),
    ("1 MB form", b"username=" + b"a" * 1_000_000, "application/x-www-form-urlencoded"),
    ("too many fields", b"&".join(b"f%d=1" % i for i in range(2000)),
     "application/x-www-form-urlencoded"),
    ("xml", b"<?xml version='1.0'?><a>1</a>", "text/xml"),
    ("multipart file", b"--b\r\nContent-Disposition: form-data; name=\"username\"; "
     b"filename=\"a.txt\"\r\n\r\nalice\r\n--b--\r\n", "multipart/form-data; boundary=b"),
]


@pytest.mark.parametrize(("what", "raw", "content_type"), BAD_BODIES,
                         ids=[b[0] for b in BAD_BODIES])
async def test_malformed_bodies_are_minus_4_and_change_nothing(
        accounts: Accounts, client: Client, stores: Stores, what: str, raw: bytes,
        content_type: str | None) -> None:
    me = await accounts.logged_in("tom")
    await me.post("/database/add", json_body={"苹果": "梨子"})
    before = await _snapshot(stores)
    for who, path in ((client, "/account/register"), (client, "/account/login"),
                      (client, "/account/reset"), (me, "/database/add"),
                      (me, "/database/update/?id=1")):
        answer = await who.post(path, raw=raw, content_type=content_type)
        assert (answer.status, answer.code) == (200, -4), (path, answer.body)
        assert answer.body["message"].startswith("参数错误：")
    assert await _snapshot(stores) == before


async def test_bodies_over_the_servers_cap_are_refused_without_a_500(
        accounts: Accounts, stores: Stores, api_web: Any) -> None:
    me = await accounts.logged_in("uma")
    before = await _snapshot(stores)
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    response = await AsyncHTTPClient().fetch(HTTPRequest(
        f"{api_web.base_url}/database/add", method="POST", body=b"{" + b" " * (2 << 20) + b"}",
        headers={"Content-Type": "application/json", "Cookie": "; ".join(
            f"{k}={v}" for k, v in me.cookies.items())}), raise_error=False)
    # Tornado answers 400 and closes (or the client sees the connection closed): what
    # matters is that nothing ran and nothing broke.
    assert response.code in (400, 413, 599)
    assert await _snapshot(stores) == before
    assert (await me.get("/database/show")).code == 200


# -- logs ----------------------------------------------------------------------------------


async def test_no_password_or_code_in_the_logs(accounts: Accounts, client: Client,
                                               stores: Stores,
                                               caplog: pytest.LogCaptureFixture) -> None:
    password = "S3cret-Horse-Battery"
    # The product logs at INFO by default (WXR_LOG_LEVEL); our own loggers and
    # Tornado's at DEBUG too, to see everything this code could ever say.
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="wxreply")
    caplog.set_level(logging.DEBUG, logger="tornado")
    code = await accounts.code("o-vera-0000000000000000001")
    await client.post("/account/register", json_body={
        "username": "vera", "password": password, "last_name": code})
    await client.post("/account/login", json_body={"username": "vera", "password": "nope-" +
                                                   password})
    await client.post("/account/login", form={"username": "vera", "password": password})
    # The password typed into the username box, as people do.
    await client.post("/account/login", json_body={"username": password, "password": "vera"})
    user = await stores.users.by_username("vera")
    assert user is not None
    reset = await stores.kv.issue_code("reset", str(user.uid))
    await client.post("/account/reset", json_body={"username": "vera", "code": reset,
                                                   "password": password + "2"})
    await client.post("/account/register", json_body={
        "username": "vera2", "password": password, "last_name": "654321"})
    await client.get(f"/database/delete/?id=1&csrf_token={client.csrf}")
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "failed web login" in text  # the log did capture these requests
    assert "POST /account/register" in text
    for secret in (password, code, reset, "654321", client.csrf or "-"):
        assert secret not in text
    assert user.openid not in text


# -- a store down ----------------------------------------------------------------------------


async def test_a_store_down_is_code_0_busy_not_a_500(servers: Servers, settings: Settings,
                                                     namespace: str) -> None:
    # Redis at a port where nothing listens (refused at once), MongoDB real.
    dead = Stores.connect(servers.mongo_url, "redis://127.0.0.1:9", db_name=namespace,
                          prefix=f"{namespace}:")
    web, server = await serve_app(build_app(settings, dead, password_rounds=4))
    try:
        client = Client(web.base_url)
        for path, body in (("/account/login", {"username": "wendy", "password": PASSWORD}),
                           ("/account/register", {"username": "wendy", "password": PASSWORD,
                                                  "last_name": "123456"}),
                           ("/account/reset", {"username": "wendy", "password": PASSWORD,
                                               "code": "123456"})):
            answer = await client.post(path, json_body=body)
            assert (answer.status, answer.code) == (200, 0)
            assert answer.body["message"] == "服务繁忙，请稍后再试"
        client.cookies = {"wxr_session": "2|garbage"}
        assert (await client.get("/database/show")).status == 401
        # A well-signed session cookie: the session cannot be looked up, so "busy".
        signed = tornado.web.create_signed_value(settings.secret_key, "wxr_session", "token")
        client.cookies = {"wxr_session": signed.decode(), "csrftoken": "token"}
        for method, path in (("GET", "/account/info"), ("GET", "/database/show"),
                             ("POST", "/database/add"), ("GET", "/database/delete/?id=1"),
                             ("DELETE", "/database/delete/?id=1"),
                             ("POST", "/database/update/?id=1"), ("POST", "/autoreply/on"),
                             ("POST", "/autoreply/off"), ("GET", "/wechat/testlogin"),
                             ("GET", "/account/logout")):
            answer = await client.call(method, path, json_body={"a": "b"}
                                       if method == "POST" else None)
            assert (answer.status, answer.code) == (200, 0), (method, path, answer.body)
    finally:
        server.stop()
        await server.close_all_connections()
        await dead.mongo.drop_database(namespace)
        await dead.close()


def test_json_answers_escape_markup() -> None:
    from web_min.bodies import encode_json

    raw = encode_json({"k": "</script><b>&\u2028"})
    assert raw == b'{"k": "\\u003c/script\\u003e\\u003cb\\u003e\\u0026\\u2028"}'
    assert json.loads(raw) == {"k": "</script><b>&\u2028"}
