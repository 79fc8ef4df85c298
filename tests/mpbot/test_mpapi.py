"""MpApi against the fake official-account API on 127.0.0.1 and the real test Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis
from tornado.httpclient import AsyncHTTPClient

from mpbot.mpapi import (
    MpApi,
    MpApiAuthFailed,
    MpApiDisabled,
    MpApiError,
    MpApiFinal,
    MpApiUnavailable,
)
from sandbox.mpapi import FakeMpApi, SentMessage
from store import Stores
from store.kv import KV
from tests.conftest import Servers

SEND = "message/custom/send"
OPENID = "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"

KvFactory = Callable[[], KV]


@pytest.fixture
async def other_process_kv(servers: Servers, stores: Stores) -> AsyncIterator[KvFactory]:
    """KVs on connections of their own, under this test's prefix: what other processes
    sharing the same Redis would have."""
    clients: list[Redis] = []

    def make() -> KV:
        client = Redis.from_url(servers.redis_url)
        clients.append(client)
        return KV(client, stores.kv.prefix)

    yield make
    for client in clients:
        await client.aclose()


def client_for(fake: FakeMpApi, kv: KV, **kwargs: object) -> MpApi:
    return MpApi(fake.base_url, fake.appid, fake.secret, kv, **kwargs)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- sending ---------------------------------------------------------------------------


async def test_send_text_delivers_cjk_and_emoji_as_utf8(mpapi: MpApi,
                                                        fake_mpapi: FakeMpApi) -> None:
    text = "你好，世界！在开会，稍后回复 👋🏽 «ok»\n第二行"
    await mpapi.send_text(OPENID, text)
    assert fake_mpapi.sent == [SentMessage(OPENID, text)]
    # No \u escapes on the wire: the body carries the UTF-8 bytes themselves.
    assert text.encode("utf-8").replace(b"\n", b"\\n") in fake_mpapi.sent[0].body


async def test_eight_concurrent_sends_fetch_one_token(mpapi: MpApi,
                                                      fake_mpapi: FakeMpApi) -> None:
    fake_mpapi.delay(0.1, path="token")  # keep the fetch in flight while the others ask
    await asyncio.gather(*(mpapi.send_text(OPENID, f"m{i}") for i in range(8)))
    assert fake_mpapi.token_fetches == 1
    assert sorted(m.content for m in fake_mpapi.sent) == [f"m{i}" for i in range(8)]


@pytest.mark.parametrize("processes", [2, 8])
async def test_processes_sharing_redis_fetch_one_token(
        fake_mpapi: FakeMpApi, other_process_kv: KvFactory, processes: int) -> None:
    clients = [client_for(fake_mpapi, other_process_kv()) for _ in range(processes)]
    fake_mpapi.delay(0.1, path="token")
    await asyncio.gather(*(c.send_text(OPENID, f"{n}-{i}")
                           for n, c in enumerate(clients) for i in range(4)))
    assert fake_mpapi.token_fetches == 1
    assert len(fake_mpapi.sent) == 4 * processes


async def test_the_token_is_shared_with_ttl_below_wechats_expiry(
        mpapi: MpApi, fake_mpapi: FakeMpApi, stores: Stores) -> None:
    await mpapi.send_text(OPENID, "hi")
    ttl_ms = await stores.redis.pttl(stores.kv.key(mpapi.token_key))
    assert (7200 - 300 - 5) * 1000 < ttl_ms <= (7200 - 300) * 1000
    assert await stores.redis.exists(stores.kv.key(mpapi.lock_key)) == 0


# -- token rejection -------------------------------------------------------------------


@pytest.mark.parametrize("errcode", [40001, 42001, 40014])
async def test_a_rejected_token_is_refreshed_and_the_call_retried_once(
        mpapi: MpApi, fake_mpapi: FakeMpApi, errcode: int) -> None:
    await mpapi.access_token()
    fake_mpapi.fail_next(errcode, path=SEND)
    await mpapi.send_text(OPENID, "once")
    assert fake_mpapi.token_fetches == 2
    assert fake_mpapi.calls_to(SEND) == 2
    assert [m.content for m in fake_mpapi.sent] == ["once"]


async def test_tokens_expired_by_wechat_are_replaced(mpapi: MpApi,
                                                     fake_mpapi: FakeMpApi) -> None:
    await mpapi.send_text(OPENID, "before")
    fake_mpapi.expire_tokens()
    await mpapi.send_text(OPENID, "after")
    assert fake_mpapi.token_fetches == 2
    assert [c.errcode for c in fake_mpapi.calls] == [0, 42001, 0]


async def test_persistent_token_rejection_is_a_bounded_typed_failure(
        mpapi: MpApi, fake_mpapi: FakeMpApi) -> None:
    fake_mpapi.fail_next(40001, times=None, path=SEND)
    started = time.monotonic()
    with pytest.raises(MpApiAuthFailed) as caught:
        await mpapi.send_text(OPENID, "never")
    assert time.monotonic() - started < 2.0
    assert caught.value.errcode == 40001
    assert fake_mpapi.calls_to(SEND) == 2
    assert fake_mpapi.token_fetches == 2
    assert fake_mpapi.sent == []
    assert "access token was rejected" in str(caught.value)


async def test_invalidation_keeps_a_newer_token_stored_by_another_process(
        fake_mpapi: FakeMpApi, other_process_kv: KvFactory, stores: Stores) -> None:
    first, second = (client_for(fake_mpapi, other_process_kv()) for _ in range(2))
    await first.send_text(OPENID, "a1")
    await second.send_text(OPENID, "b1")  # both now hold the same token in memory
    fake_mpapi.expire_tokens()
    await first.send_text(OPENID, "a2")  # 42001: drops the old token, shares a new one
    newer = await stores.kv.get(first.token_key)
    assert newer is not None
    await second.send_text(OPENID, "b2")  # 42001 with the old token: must keep the newer
    assert await stores.kv.get(first.token_key) == newer
    assert fake_mpapi.token_fetches == 2
    assert [m.content for m in fake_mpapi.sent] == ["a1", "b1", "a2", "b2"]


async def test_stable_token_mode(fake_mpapi: FakeMpApi, stores: Stores) -> None:
    api = client_for(fake_mpapi, stores.kv, stable_token=True)
    await api.send_text(OPENID, "one")
    assert await api.access_token() == fake_mpapi.stable
    fake_mpapi.fail_next(40001, path=SEND)
    await api.send_text(OPENID, "two")
    assert fake_mpapi.calls_to(SEND) == 3
    assert [m.content for m in fake_mpapi.sent] == ["one", "two"]


async def test_the_injected_clock_decides_when_to_refresh(fake_mpapi: FakeMpApi,
                                                          stores: Stores) -> None:
    clock = [1_000_000.0]
    api = client_for(fake_mpapi, stores.kv, now=lambda: clock[0])
    await api.send_text(OPENID, "a")
    clock[0] += 7200 - 300 - 1
    await api.send_text(OPENID, "b")
    assert fake_mpapi.token_fetches == 1
    clock[0] += 2  # past expires_in minus the margin
    await api.send_text(OPENID, "c")
    assert fake_mpapi.token_fetches == 2


async def test_a_dead_lock_holder_delays_but_does_not_stop_the_fetch(
        mpapi: MpApi, fake_mpapi: FakeMpApi, stores: Stores) -> None:
    await stores.kv.put(mpapi.lock_key, "a process that died while fetching", 300)
    started = time.monotonic()
    await mpapi.send_text(OPENID, "eventually")
    assert 0.25 < time.monotonic() - started < 1.5
    assert fake_mpapi.token_fetches == 1


async def test_waiting_for_another_process_is_bounded(fake_mpapi: FakeMpApi,
                                                      stores: Stores) -> None:
    api = client_for(fake_mpapi, stores.kv, timeout=0.1)
    await stores.kv.put(api.lock_key, "a process that hangs", 60_000)
    started = time.monotonic()
    with pytest.raises(MpApiUnavailable, match="another process"):
        await api.send_text(OPENID, "never")
    assert time.monotonic() - started < 0.1 + 1.0 + 0.5 + 0.5
    assert fake_mpapi.token_fetches == 0


# -- errors that must not be retried ---------------------------------------------------


@pytest.mark.parametrize(("errcode", "words"), [
    (45015, "48 hours"),
    (45047, "too many customer-service messages"),
    (43004, "no longer follows"),
    (40003, "openid is invalid"),
])
async def test_final_errors_are_not_retried(mpapi: MpApi, fake_mpapi: FakeMpApi,
                                            errcode: int, words: str) -> None:
    fake_mpapi.fail_next(errcode, path=SEND)
    with pytest.raises(MpApiFinal) as caught:
        await mpapi.send_text(OPENID, "late")
    assert caught.value.errcode == errcode
    assert words in str(caught.value)
    assert fake_mpapi.calls_to(SEND) == 1
    assert fake_mpapi.sent == []


async def test_unfollowed_user_is_final(mpapi: MpApi, fake_mpapi: FakeMpApi) -> None:
    fake_mpapi.set_user(OPENID, subscribed=False)
    with pytest.raises(MpApiFinal) as caught:
        await mpapi.send_text(OPENID, "bye")
    assert caught.value.errcode == 43004


async def test_other_errcodes_are_plain_api_errors(mpapi: MpApi, fake_mpapi: FakeMpApi) -> None:
    fake_mpapi.fail_next(45009, path=SEND)
    with pytest.raises(MpApiError) as caught:
        await mpapi.send_text(OPENID, "quota")
    assert type(caught.value) is MpApiError
    assert "quota" in str(caught.value)
    assert fake_mpapi.calls_to(SEND) == 1


async def test_wechat_busy_is_unavailable(mpapi: MpApi, fake_mpapi: FakeMpApi) -> None:
    fake_mpapi.fail_next(-1, path="token")
    with pytest.raises(MpApiUnavailable, match="busy"):
        await mpapi.send_text(OPENID, "x")
    await mpapi.send_text(OPENID, "y")  # the failed fetch left no lock behind
    assert [m.content for m in fake_mpapi.sent] == ["y"]


async def test_wrong_secret_is_an_auth_failure(fake_mpapi: FakeMpApi, stores: Stores) -> None:
    api = MpApi(fake_mpapi.base_url, fake_mpapi.appid, "not-the-secret-42", stores.kv)
    with pytest.raises(MpApiAuthFailed) as caught:
        await api.send_text(OPENID, "x")
    assert caught.value.errcode == 40125
    assert "AppSecret is wrong" in str(caught.value)
    assert "not-the-secret-42" not in str(caught.value)


# -- network failures and timeouts -----------------------------------------------------


async def test_request_timeout_is_honoured(fake_mpapi: FakeMpApi, stores: Stores) -> None:
    api = client_for(fake_mpapi, stores.kv, timeout=0.3)
    await api.access_token()
    fake_mpapi.delay(2.0, path=SEND)
    started = time.monotonic()
    with pytest.raises(MpApiUnavailable, match="no answer in time"):
        await api.send_text(OPENID, "slow")
    assert 0.25 < time.monotonic() - started < 0.3 + 0.4


async def test_connection_refused_is_unavailable(stores: Stores) -> None:
    api = MpApi(f"http://127.0.0.1:{free_port()}/cgi-bin/", "wxabc", "s3cr3t", stores.kv,
                timeout=1.0)
    started = time.monotonic()
    with pytest.raises(MpApiUnavailable, match="cannot connect"):
        await api.send_text(OPENID, "x")
    assert time.monotonic() - started < 1.0


async def test_a_slow_call_does_not_block_the_event_loop(mpapi: MpApi,
                                                         fake_mpapi: FakeMpApi) -> None:
    await mpapi.access_token()
    fake_mpapi.delay(0.3, path=SEND)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        await mpapi.send_text(OPENID, "slow but fine")
    finally:
        ticker.cancel()
    assert ticks >= 15
    assert [m.content for m in fake_mpapi.sent] == ["slow but fine"]


# -- disabled client -------------------------------------------------------------------


@pytest.mark.parametrize(("appid", "secret", "missing"), [
    ("", "", "WXR_MP_APPID and WXR_MP_SECRET"),
    ("wxabc", "", "WXR_MP_SECRET"),
])
async def test_a_disabled_client_makes_no_network_call(
        fake_mpapi: FakeMpApi, stores: Stores, appid: str, secret: str, missing: str) -> None:
    api = MpApi(fake_mpapi.base_url, appid, secret, stores.kv)
    assert not api.enabled
    with pytest.raises(MpApiDisabled, match=missing):
        await api.send_text(OPENID, "x")
    with pytest.raises(MpApiDisabled):
        await api.user_info(OPENID)
    with pytest.raises(MpApiDisabled):
        await api.access_token()
    assert fake_mpapi.calls == []
    assert fake_mpapi.token_fetches == 0
    assert [k async for k in stores.redis.scan_iter(match=f"{stores.kv.prefix}mp:*")] == []


# -- user info -------------------------------------------------------------------------


async def test_user_info_returns_what_wechat_has(mpapi: MpApi, fake_mpapi: FakeMpApi) -> None:
    fake_mpapi.set_user("o-named", nickname="小明🍎")
    named = await mpapi.user_info("o-named")
    assert named is not None
    assert named["nickname"] == "小明🍎"
    assert named["openid"] == "o-named"
    assert named["language"] == "zh_CN"
    assert "errcode" not in named
    anonymous = await mpapi.user_info("o-plain")
    assert anonymous is not None
    assert "nickname" not in anonymous  # as WeChat does for most accounts since 2021


async def test_user_info_of_a_non_follower_is_none(mpapi: MpApi, fake_mpapi: FakeMpApi) -> None:
    fake_mpapi.set_user("o-gone", subscribed=False)
    assert await mpapi.user_info("o-gone") is None
    assert await mpapi.user_info("not an openid!") is None


# -- secrets stay secret ---------------------------------------------------------------


async def test_token_and_secret_never_reach_logs_or_errors(
        fake_mpapi: FakeMpApi, stores: Stores, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api = client_for(fake_mpapi, stores.kv, timeout=0.3)
    # A prefix of its own, or it would simply use the token that ``api`` shares.
    wrong = MpApi(fake_mpapi.base_url, fake_mpapi.appid, "wrong-secret-7f3a",
                  KV(stores.redis, stores.kv.prefix + "wrong:"))
    errors: list[BaseException] = []

    async def expect_failure(coro: object) -> None:
        with pytest.raises(MpApiError) as caught:
            await coro  # type: ignore[misc]
        errors.append(caught.value)

    await api.send_text(OPENID, "ok")
    fake_mpapi.fail_next(40001, path=SEND)
    await api.send_text(OPENID, "retried")
    fake_mpapi.fail_next(40001, times=2, path=SEND)
    await expect_failure(api.send_text(OPENID, "persistent"))
    fake_mpapi.fail_next(45015, path=SEND)
    await expect_failure(api.send_text(OPENID, "final"))
    fake_mpapi.delay(1.0, path=SEND)
    await expect_failure(api.send_text(OPENID, "timeout"))
    await expect_failure(wrong.send_text(OPENID, "wrong secret"))
    fake_mpapi.set_user(OPENID, subscribed=False)
    await expect_failure(api.send_text(OPENID, "unfollowed"))

    assert fake_mpapi.issued
    assert "access token" in caplog.text  # the log did talk about the token…
    texts = [caplog.text, repr(api), repr(wrong)]
    for exc in errors:
        texts += [str(exc), repr(exc), repr(exc.args), str(exc.__context__)]
    for credential in [fake_mpapi.secret, "wrong-secret-7f3a", *fake_mpapi.issued]:
        for text in texts:
            assert credential not in text  # …but never showed one


# -- the fake's HTTP hooks (what a demo or another process uses) -----------------------


async def test_the_fake_can_be_driven_over_http(mpapi: MpApi, fake_mpapi: FakeMpApi) -> None:
    root = fake_mpapi.base_url.removesuffix("cgi-bin/") + "_fake/"
    http = AsyncHTTPClient()

    async def hook(name: str, body: dict[str, object] | None = None) -> dict[str, object]:
        if body is None:
            response = await http.fetch(root + name, request_timeout=2)
        else:
            response = await http.fetch(root + name, method="POST", request_timeout=2,
                                        body=json.dumps(body, ensure_ascii=False))
        return json.loads(response.body)

    await hook("fail", {"errcode": 45047, "path": SEND})
    with pytest.raises(MpApiFinal):
        await mpapi.send_text(OPENID, "too many")
    await hook("user", {"openid": "o-named", "nickname": "阿强"})
    assert (await mpapi.user_info("o-named") or {})["nickname"] == "阿强"
    await hook("expire_tokens", {})
    await mpapi.send_text(OPENID, "after expiry")
    assert await hook("sent") == {"sent": [{"openid": OPENID, "content": "after expiry",
                                            "msgtype": "text"}]}
    stats = await hook("stats")
    assert stats["token_fetches"] == 2
    assert stats["calls"] == [{"path": SEND, "errcode": 45047},
                              {"path": "user/info", "errcode": 0},
                              {"path": SEND, "errcode": 42001},
                              {"path": SEND, "errcode": 0}]
    await hook("reset", {})
    assert fake_mpapi.sent == []
    assert fake_mpapi.token_fetches == 0
