"""/wechat as WeChat's servers see it: verification, modes, replay, retries, hostile bodies."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import urllib.parse

import pytest
from freezegun import freeze_time
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from config import Settings
from config.logs import log_request
from mpbot import hints
from mpbot.edge import BUSY
from mpbot.protocol import Envelope, build_push_xml, new_nonce, parse_xml, signed_query
from mpbot.simulator import PreparedPush, Simulator
from store import Stores
from tests.conftest import TEST_APPID, TEST_TOKEN, Web, start_web
from wxreply.app import build_app

OPENID = "o-proto-00000000000000000001"


async def fetch(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, bytes]:
    response = await AsyncHTTPClient().fetch(
        HTTPRequest(url, method=method, body=body, request_timeout=10), raise_error=False
    )
    return response.code, response.body or b""


def query_url(web: Web, **params: str) -> str:
    return f"{web.base_url}/wechat?{urllib.parse.urlencode(params)}"


async def user_count(stores: Stores) -> int:
    return await stores.db["users"].count_documents({})


# -- GET verification -------------------------------------------------------------------


async def test_get_echoes_echostr_byte_exact(web: Web) -> None:
    ts = str(int(time.time()))
    echo = "7026481526734551537"
    code, body = await fetch(query_url(web, **signed_query(TEST_TOKEN, ts, "42"), echostr=echo))
    assert (code, body) == (200, echo.encode())
    odd = "a+b/c=d%e 中"
    code, body = await fetch(query_url(web, **signed_query(TEST_TOKEN, ts, "43"), echostr=odd))
    assert (code, body) == (200, odd.encode())


@pytest.mark.parametrize(
    "mutate",
    [
        lambda q: q.update(signature="0" * 40),
        lambda q: q.pop("signature"),
        lambda q: q.pop("nonce"),
        lambda q: q.pop("timestamp"),
        lambda q: q.update(timestamp="abc"),
    ],
)
async def test_get_with_bad_signature_is_403(web: Web, mutate) -> None:  # type: ignore[no-untyped-def]
    query = signed_query(TEST_TOKEN, str(int(time.time())), "42", echostr="x")
    mutate(query)
    code, body = await fetch(query_url(web, **query))
    assert code == 403
    assert b"Traceback" not in body


# -- signatures and side effects --------------------------------------------------------


async def test_wrong_signature_runs_nothing(sim: Simulator, stores: Stores) -> None:
    push = sim.prepare(OPENID, "添加 苹果 梨子")
    forged = PreparedPush(push.url.replace("signature=", "signature=0"), push.body)
    delivery = await sim.post(forged)
    assert delivery.status == 403
    assert await user_count(stores) == 0


async def test_missing_signature_runs_nothing(web: Web, stores: Stores) -> None:
    body = build_push_xml(to_user="gh", from_user=OPENID, create_time=int(time.time()),
                          content="注册", msg_id="1")
    code, _ = await fetch(f"{web.base_url}/wechat", "POST", body.encode())
    assert code == 403
    assert await user_count(stores) == 0


@pytest.mark.parametrize("skew", [-301, 301, -10_000, 10_000])
async def test_stale_and_future_timestamps_are_refused(sim: Simulator, stores: Stores,
                                                       skew: int) -> None:
    delivery = await sim.post(sim.prepare(OPENID, "注册", timestamp=int(time.time()) + skew))
    assert delivery.status == 403
    assert await user_count(stores) == 0


@pytest.mark.parametrize("skew", [-290, 290])
async def test_timestamps_inside_the_window_are_fine(sim: Simulator, skew: int) -> None:
    delivery = await sim.post(sim.prepare(OPENID, "帮助", timestamp=int(time.time()) + skew))
    assert delivery.status == 200
    assert delivery.text.startswith("可用命令")


async def test_openid_must_match_from_user(sim: Simulator, stores: Stores) -> None:
    push = sim.prepare(OPENID, "注册")
    other = PreparedPush(push.url.replace(f"openid={OPENID}", "openid=o-someone-else"), push.body)
    assert (await sim.post(other)).status == 403
    assert await user_count(stores) == 0


async def test_replayed_nonce_with_another_message_is_refused(sim: Simulator,
                                                              stores: Stores) -> None:
    nonce = new_nonce()
    first = await sim.post(sim.prepare(OPENID, "添加 苹果 梨子", nonce=nonce))
    assert first.text == "已添加 01：苹果 → 梨子"
    replay = await sim.post(sim.prepare(OPENID, "添加 香蕉 橘子", nonce=nonce))
    assert replay.status == 403
    user = await stores.users.by_openid(OPENID)
    assert user is not None
    assert await stores.rules.count(user.uid) == 1


# -- exactly once -----------------------------------------------------------------------


async def test_same_push_four_times_at_once_one_effect(sim: Simulator, stores: Stores) -> None:
    push = sim.prepare(OPENID, "添加 苹果 梨子")
    deliveries = await sim.send_times(push, 4)
    assert [d.status for d in deliveries] == [200] * 4
    assert {d.text for d in deliveries} == {"已添加 01：苹果 → 梨子"}
    user = await stores.users.by_openid(OPENID)
    assert user is not None
    assert await stores.rules.count(user.uid) == 1


async def test_retry_after_the_first_answer_gets_the_same_reply(sim: Simulator) -> None:
    push = sim.prepare(OPENID, "添加 苹果 梨子")
    first = await sim.post(push)
    again = await sim.post(push)
    assert first.text == again.text == "已添加 01：苹果 → 梨子"


async def test_retry_with_new_nonce_same_msgid_is_deduplicated(sim: Simulator,
                                                               stores: Stores) -> None:
    first = await sim.post(sim.prepare(OPENID, "添加 苹果 梨子", msg_id="1234567"))
    retry = await sim.post(sim.prepare(OPENID, "添加 苹果 梨子", msg_id="1234567"))
    assert first.text == retry.text == "已添加 01：苹果 → 梨子"
    user = await stores.users.by_openid(OPENID)
    assert user is not None
    assert await stores.rules.count(user.uid) == 1


async def test_subscribe_event_four_times_one_user(sim: Simulator, stores: Stores) -> None:
    push = sim.prepare(OPENID, event="subscribe")
    deliveries = await sim.send_times(push, 4)
    texts = {d.text for d in deliveries}
    assert len(texts) == 1
    (greeting,) = texts
    assert greeting.startswith("欢迎关注微信回复助手！你的用户编号是 1000。")
    assert "可用命令" in greeting
    assert await user_count(stores) == 1


async def test_unsubscribe_keeps_data_and_resubscribe_welcomes_back(sim: Simulator,
                                                                    stores: Stores) -> None:
    await sim.send("添加 苹果 梨子", OPENID)
    gone = await sim.post(sim.prepare(OPENID, event="unsubscribe"))
    assert (gone.status, gone.raw) == (200, b"success")
    user = await stores.users.by_openid(OPENID)
    assert user is not None
    assert not user.subscribed
    assert await stores.rules.count(user.uid) == 1
    back = await sim.post(sim.prepare(OPENID, event="subscribe"))
    assert back.text.startswith("欢迎回来！你的用户编号是")
    assert (await stores.users.get(user.uid)).subscribed


async def test_events_and_non_text_messages(sim: Simulator) -> None:
    click = await sim.post(sim.prepare(OPENID, event="CLICK", event_key="帮助"))
    assert click.text.startswith("可用命令")
    view = await sim.post(sim.prepare(OPENID, event="VIEW", event_key="https://example.invalid/"))
    assert (view.status, view.raw) == (200, b"success")
    odd = await sim.post(sim.prepare(OPENID, event="some_future_event"))
    assert odd.raw == b"success"
    for kind, said in (("image", "收到图片。"), ("video", "收到视频。"), ("location", "收到位置。"),
                       ("link", "收到链接。"), ("file", "收到文件。"),
                       ("shortvideo", "收到小视频。")):
        delivery = await sim.post(sim.prepare(OPENID, "", msg_type=kind))
        # What the account can do, not only "I read text".
        assert delivery.text == said + hints.CAN_DO
        assert "「登录」" in delivery.text
        assert "「帮助」" in delivery.text
    voice = await sim.post(sim.prepare(OPENID, "", msg_type="voice"))
    assert voice.text == hints.VOICE_WITHOUT_RECOGNITION


# -- modes ------------------------------------------------------------------------------


@pytest.fixture
async def safe_web(stores: Stores, safe_settings: Settings):  # type: ignore[no-untyped-def]
    web, server = await start_web(build_app(safe_settings, stores))
    yield web
    server.stop()
    await server.close_all_connections()


@pytest.fixture
def safe_sim(safe_web: Web, safe_settings: Settings) -> Simulator:
    return Simulator(f"{safe_web.base_url}/wechat", safe_settings.mp_token,
                     safe_settings.mp_aes_key, safe_settings.mp_appid)


async def test_safe_mode_round_trip_reply_is_sealed(safe_sim: Simulator, stores: Stores) -> None:
    delivery = await safe_sim.send("添加 苹果 梨子", OPENID)
    assert delivery.status == 200
    assert b"<Encrypt>" in delivery.raw
    assert b"<MsgSignature>" in delivery.raw
    assert "苹果".encode() not in delivery.raw  # nothing readable outside the envelope
    assert delivery.text == "已添加 01：苹果 → 梨子"  # read_reply checked the signature


async def test_safe_mode_four_times_at_once(safe_sim: Simulator, stores: Stores) -> None:
    deliveries = await safe_sim.send_times(safe_sim.prepare(OPENID, "添加 苹果 梨子"), 4)
    assert {d.text for d in deliveries} == {"已添加 01：苹果 → 梨子"}
    user = await stores.users.by_openid(OPENID)
    assert user is not None
    assert await stores.rules.count(user.uid) == 1


async def test_compatible_mode_body_is_accepted(safe_web: Web, safe_settings: Settings) -> None:
    # Compatible mode: plaintext fields and <Encrypt> in one body, encrypt_type=aes.
    ts, nonce = str(int(time.time())), new_nonce()
    inner = build_push_xml(to_user="gh", from_user=OPENID, create_time=int(ts),
                           content="帮助", msg_id="99")
    envelope = Envelope(TEST_TOKEN, safe_settings.mp_aes_key, TEST_APPID)
    outer = parse_xml(envelope.seal(inner, nonce, ts))
    body = inner.replace("</xml>", f"<Encrypt><![CDATA[{outer['Encrypt']}]]></Encrypt></xml>")
    query = signed_query(TEST_TOKEN, ts, nonce, openid=OPENID, encrypt_type="aes",
                         msg_signature=outer["MsgSignature"])
    code, raw = await fetch(query_url(safe_web, **query), "POST", body.encode())
    assert code == 200
    assert b"<Encrypt>" in raw
    from mpbot.protocol import read_reply

    assert read_reply(raw.decode(), envelope, TEST_TOKEN).startswith("可用命令")


async def test_plaintext_push_with_a_key_set_is_answered_in_plaintext(
        safe_web: Web, settings: Settings, stores: Stores,
        caplog: pytest.LogCaptureFixture) -> None:
    """The account went back to plaintext mode at WeChat before the key was removed here
    (or the key was set here before the console switched): the push is still genuine
    (its query signature checks out) and gets its answer, the way WeChat expects it in
    plaintext mode; the log says what is going on."""
    caplog.set_level(logging.INFO, logger="wxreply.mpbot")
    plain = Simulator(f"{safe_web.base_url}/wechat", settings.mp_token)
    delivery = await plain.send("添加 苹果 梨子", OPENID)
    assert (delivery.status, delivery.text) == (200, "已添加 01：苹果 → 梨子")
    assert b"<Encrypt>" not in delivery.raw
    assert "WeChat sends plaintext-mode pushes; this server expects safe mode" in caplog.text
    # Forged: the query signature is still required.
    forged = plain.prepare(OPENID, "删除 01")
    bad = await plain.post(PreparedPush(forged.url.replace("signature=", "signature=0"),
                                        forged.body))
    assert bad.status == 403
    user = await stores.users.by_openid(OPENID)
    assert user is not None
    assert await stores.rules.count(user.uid) == 1


async def test_compatible_push_without_a_key_uses_the_plaintext_copy(
        web: Web, safe_settings: Settings, stores: Stores,
        caplog: pytest.LogCaptureFixture) -> None:
    """Compatible mode carries the message twice: readable and encrypted
    (https://m.w3cschool.cn/weixinkaifawendang/vwop1qcq.html, WeChat's 消息加解密说明:
    "公众平台发送消息内容将同时包括明文和密文 … 公众号回复明文或密文均可").  Without a key
    the plaintext copy is used, after checking msg_signature over the ciphertext."""
    caplog.set_level(logging.INFO, logger="wxreply.mpbot")
    compat = Simulator(f"{web.base_url}/wechat", safe_settings.mp_token,
                       safe_settings.mp_aes_key, safe_settings.mp_appid)
    delivery = await compat.post(compat.prepare(OPENID, "添加 苹果 梨子", compatible=True))
    assert delivery.status == 200
    assert b"<Encrypt>" not in delivery.raw  # a plaintext reply, which compatible mode takes
    assert delivery.text == "已添加 01：苹果 → 梨子"
    assert "WeChat sends compatible-mode pushes; this server expects plaintext mode" in (
        caplog.text)
    push = compat.prepare(OPENID, "删除 01", compatible=True)
    forged = PreparedPush(push.url.replace("msg_signature=", "msg_signature=00"), push.body)
    assert (await compat.post(forged)).status == 403


async def test_safe_push_without_a_key_is_answered_with_nothing(
        web: Web, safe_settings: Settings, stores: Stores,
        caplog: pytest.LogCaptureFixture) -> None:
    """Safe mode at WeChat, no key here: nothing can be read, but an error status would
    make WeChat show "该公众号暂时无法提供服务"; "success" shows nothing, and the log says
    exactly what to configure."""
    caplog.set_level(logging.INFO, logger="wxreply.mpbot")
    sealed = Simulator(f"{web.base_url}/wechat", safe_settings.mp_token,
                       safe_settings.mp_aes_key, safe_settings.mp_appid)
    delivery = await sealed.send("注册", OPENID)
    assert (delivery.status, delivery.raw) == (200, b"success")
    assert await user_count(stores) == 0
    assert "WXR_MP_AES_KEY is not set" in caplog.text
    # Not from WeChat (bad msg_signature): still a 403.
    push = sealed.prepare(OPENID, "注册")
    forged = PreparedPush(push.url.replace("msg_signature=", "msg_signature=00"), push.body)
    assert (await sealed.post(forged)).status == 403


async def test_compatible_push_with_a_key_uses_the_ciphertext(
        safe_sim: Simulator, stores: Stores) -> None:
    """With a key, the ciphertext is what counts: a plaintext copy that differs from it
    (tampered on the way) changes nothing."""
    push = safe_sim.prepare(OPENID, "添加 苹果 梨子", compatible=True)
    tampered = PreparedPush(push.url, push.body.replace("添加 苹果 梨子".encode(),
                                                        "添加 香蕉 橘子".encode(), 1))
    assert tampered.body != push.body
    delivery = await safe_sim.post(tampered)
    assert delivery.text == "已添加 01：苹果 → 梨子"
    assert b"<Encrypt>" in delivery.raw


async def test_switching_modes_back_and_forth_loses_no_push(
        web: Web, safe_web: Web, settings: Settings, safe_settings: Settings,
        stores: Stores) -> None:
    """Every combination of WeChat's mode and the server's configuration that a switch
    passes through gets its answer."""
    key = (safe_settings.mp_token, safe_settings.mp_aes_key, safe_settings.mp_appid)
    expected = {  # (server, WeChat) -> the push is answered
        ("plain", "plaintext"): (web, Simulator(f"{web.base_url}/wechat", settings.mp_token),
                                 False),
        ("plain", "compatible"): (web, Simulator(f"{web.base_url}/wechat", *key), True),
        ("key", "plaintext"): (safe_web, Simulator(f"{safe_web.base_url}/wechat",
                                                   settings.mp_token), False),
        ("key", "compatible"): (safe_web, Simulator(f"{safe_web.base_url}/wechat", *key), True),
        ("key", "safe"): (safe_web, Simulator(f"{safe_web.base_url}/wechat", *key), False),
    }
    for i, (name, (_, sim_, compatible)) in enumerate(expected.items()):
        delivery = await sim_.post(sim_.prepare(OPENID, f"添加 k{i} v{i}",
                                                compatible=compatible))
        assert delivery.status == 200, name
        assert delivery.text == f"已添加 {i + 1:02d}：k{i} → v{i}", name


async def test_wrong_appid_in_ciphertext(safe_web: Web, safe_settings: Settings,
                                         stores: Stores) -> None:
    other = Simulator(f"{safe_web.base_url}/wechat", safe_settings.mp_token,
                      safe_settings.mp_aes_key, "wx0000000000000000")
    assert (await other.send("注册", OPENID)).status == 400
    assert await user_count(stores) == 0


async def test_garbage_ciphertext(safe_web: Web, stores: Stores) -> None:
    ts, nonce = str(int(time.time())), new_nonce()
    for garbage in ("not base64 !!", "QUJD", "A" * 64, ""):
        from mpbot.protocol import signature

        msg_sig = signature(TEST_TOKEN, ts, nonce, garbage)
        query = signed_query(TEST_TOKEN, ts, nonce, encrypt_type="aes", msg_signature=msg_sig)
        body = f"<xml><ToUserName>gh</ToUserName><Encrypt><![CDATA[{garbage}]]></Encrypt></xml>"
        code, raw = await fetch(query_url(safe_web, **query), "POST", body.encode())
        assert code == 400, garbage
        assert b"Traceback" not in raw
    assert await user_count(stores) == 0


async def test_bad_msg_signature(safe_sim: Simulator, stores: Stores) -> None:
    push = safe_sim.prepare(OPENID, "注册")
    forged = PreparedPush(push.url.replace("msg_signature=", "msg_signature=00"), push.body)
    assert (await safe_sim.post(forged)).status == 403
    assert await user_count(stores) == 0


SAMPLE_ENCRYPT = (
    "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8"
    "PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa"
    "+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8t"
    "COp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJ"
    "vnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE="
)


@freeze_time("2014-09-03 09:14:29", real_asyncio=True)  # timestamp 1409735669
async def test_tencent_sample_verifies_and_decrypts(stores: Stores, settings: Settings) -> None:
    """Tencent's published WXBizMsgCrypt sample, byte for byte."""
    assert int(time.time()) == 1409735669
    sample = dataclasses.replace(settings, mp_token="spamtest", mp_appid="wx2c2769f8efd9abc2",
                                 mp_aes_key="abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
    web, server = await start_web(build_app(sample, stores))
    try:
        query = signed_query("spamtest", "1409735669", "1320562132", encrypt_type="aes",
                             msg_signature="5d197aaffba7e9b25a30732f161a50dee96bd5fa")
        body = (f"<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>"
                f"<Encrypt><![CDATA[{SAMPLE_ENCRYPT}]]></Encrypt></xml>")
        code, raw = await fetch(query_url(web, **query), "POST", body.encode())
        assert code == 200
        reader = Simulator("", "spamtest", sample.mp_aes_key, sample.mp_appid)
        from mpbot.protocol import read_reply

        assert read_reply(raw.decode(), reader.envelope, "spamtest") == (
            "没看懂“abcdteT”。发送「帮助」查看全部命令，例如：添加 苹果 梨子"
        )
    finally:
        server.stop()


# -- hostile bodies ---------------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<xml><ToUserName>gh</ToUserName><FromUserName>{openid}</FromUserName>
<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&lol3;</Content><MsgId>1</MsgId></xml>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>
<xml><ToUserName>gh</ToUserName><FromUserName>{openid}</FromUserName><CreateTime>1</CreateTime>
<MsgType>text</MsgType><Content>&e;</Content><MsgId>1</MsgId></xml>"""


def _push(**fields: str) -> str:
    return "<xml>" + "".join(f"<{k}>{v}</{k}>" for k, v in fields.items()) + "</xml>"


HOSTILE = {
    "malformed": "<xml><ToUserName>gh</ToUserName",
    "truncated": _push(ToUserName="gh", FromUserName=OPENID)[:-3],
    "not xml": "hello",
    "empty": "",
    "wrong root": "<foo><MsgType>text</MsgType></foo>",
    "missing MsgType": _push(ToUserName="gh", FromUserName=OPENID, CreateTime="1",
                             Content="注册", MsgId="1"),
    "missing FromUserName": _push(ToUserName="gh", CreateTime="1", MsgType="text",
                                  Content="注册", MsgId="1"),
    "duplicate tags": _push(ToUserName="gh", FromUserName=OPENID, CreateTime="1",
                            MsgType="text", Content="注册", MsgId="1").replace(
        "</xml>", "<Content>删除 01</Content></xml>"),
    "bad CreateTime": _push(ToUserName="gh", FromUserName=OPENID, CreateTime="yesterday",
                            MsgType="text", Content="注册", MsgId="1"),
    "bad MsgId": _push(ToUserName="gh", FromUserName=OPENID, CreateTime="1", MsgType="text",
                       Content="注册", MsgId='{"$ne":1}'),
    "huge event key": _push(ToUserName="gh", FromUserName=OPENID, CreateTime="1",
                            MsgType="event", Event="CLICK", EventKey="k" * 2000),
    "billion laughs": BILLION_LAUGHS.format(openid=OPENID),
    "external entity": EXTERNAL_ENTITY.format(openid=OPENID),
    "control char": _push(ToUserName="gh", FromUserName=OPENID, CreateTime="1",
                          MsgType="text", Content="a\x01b", MsgId="1"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_bodies_get_400_and_change_nothing(sim: Simulator, stores: Stores,
                                                         name: str) -> None:
    delivery = await sim.post(sim.prepare(OPENID, xml=HOSTILE[name]))
    assert delivery.status == 400, (name, delivery.raw)
    assert b"Traceback" not in delivery.raw
    assert await user_count(stores) == 0


async def test_non_utf8_body(sim: Simulator, stores: Stores) -> None:
    push = sim.prepare(OPENID, "注册")
    latin = PreparedPush(push.url, push.body.replace("注册".encode(), "注册".encode("gbk")))
    assert (await sim.post(latin)).status == 400
    assert await user_count(stores) == 0


@pytest.mark.parametrize(("size", "status"), [(64 * 1024 + 1, 413), (3 * 1024 * 1024, 400)])
async def test_oversized_bodies(sim: Simulator, stores: Stores, size: int, status: int) -> None:
    push = sim.prepare(OPENID, "注册")
    big = PreparedPush(push.url, push.body + b" " * (size - len(push.body)))
    try:
        delivery = await sim.post(big)
        assert delivery.status == status or delivery.status in (400, 413, 599)
    except (ConnectionError, OSError):
        pass  # beyond the server's hard cap the connection is simply closed
    assert await user_count(stores) == 0


async def test_cdata_terminator_in_content_round_trips(chat) -> None:  # type: ignore[no-untyped-def]
    assert await chat("添加 a]]>b c]]>d") == "已添加 01：a]]>b → c]]>d"


def test_long_replies_are_cut_to_2048_utf8_bytes() -> None:
    from mpbot.protocol import render_text

    for unit in ("字", "😀", "a", "é"):
        xml = render_text("o", "gh", unit * 3000)
        content = parse_xml(xml)["Content"]
        assert len(content.encode()) <= 2048
        assert content.endswith("…")
        assert content.encode().decode() == content


# -- stores and the IOLoop --------------------------------------------------------------


async def test_a_bug_in_a_command_still_gets_a_valid_reply(stores: Stores,
                                                            settings: Settings) -> None:
    from mpbot.commands import TABLE
    from mpbot.edge import Edge, routes
    from mpbot.table import CommandTable

    buggy = CommandTable()

    @buggy.register("坏", "broken", usage="坏", help="always fails", example="坏")
    async def broken(ctx, args):  # type: ignore[no-untyped-def]
        raise RuntimeError("bug")

    import tornado.web

    app = tornado.web.Application(routes(Edge(settings, stores, table=buggy)),
                                  log_function=log_request)
    web, server = await start_web(app)
    try:
        sim = Simulator(f"{web.base_url}/wechat", settings.mp_token)
        delivery = await sim.send("坏", OPENID)
    finally:
        server.stop()
    assert (delivery.status, delivery.text) == (200, BUSY)
    assert TABLE.lookup("坏") is None


async def test_many_pushes_at_once(sim: Simulator, stores: Stores) -> None:
    deliveries = await asyncio.gather(
        *(sim.send(f"添加 k{i} v{i}", f"o-many-{i % 5:020d}") for i in range(50))
    )
    assert all(d.status == 200 and d.text.startswith("已添加") for d in deliveries)
    assert await stores.db["rules"].count_documents({}) == 50


async def test_subscribe_fetches_the_nickname_in_the_background(stores: Stores, settings: Settings,
                                                                fake_mpapi, mpapi) -> None:  # type: ignore[no-untyped-def]
    fake_mpapi.set_user(OPENID, nickname="小明")
    import tornado.web

    from mpbot.edge import Edge, routes

    web, server = await start_web(tornado.web.Application(
        routes(Edge(settings, stores, mpapi=mpapi)), log_function=log_request))
    try:
        sim = Simulator(f"{web.base_url}/wechat", settings.mp_token)
        greeting = await sim.post(sim.prepare(OPENID, event="subscribe"))
        assert greeting.text.startswith("欢迎关注")
        for _ in range(100):
            user = await stores.users.by_openid(OPENID)
            if user is not None and user.nickname:
                break
            await asyncio.sleep(0.02)
        assert user is not None
        assert user.nickname == "小明"
    finally:
        server.stop()
