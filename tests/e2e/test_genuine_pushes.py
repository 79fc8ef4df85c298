"""Every genuine push gets an answer: the kinds of messages and events real users send,
as WeChat's servers send them, in each of the three modes.

The samples are WeChat's own (its 接收普通消息 / 接收事件推送 / 自定义菜单事件推送 documents)
as other libraries' test suites recorded them; each names its source.  ``{openid}``,
``{msgid}`` and ``{ts}`` (the CreateTime of events) are filled in per delivery; the rest
is byte for byte (the indentation, the whitespace around CDATA of WeRoBot's card sample,
the nested blocks of menu events).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest

from config import Settings
from mpbot import hints
from mpbot.simulator import Simulator
from store import Stores
from tests.conftest import Web, start_web
from wxreply.app import build_app

OPENID = "o-genuine-0000000000000001"
_ids = itertools.count(7_000_000_000_000_000_001)
# Events are told apart by CreateTime (they have no MsgId): one second each.
_times = itertools.count(1_700_000_000)

# WeRoBot tests/test_parser.py (test_text_message).
TEXT = """
    <xml>
        <ToUserName><![CDATA[toUser]]></ToUserName>
        <FromUserName><![CDATA[{openid}]]></FromUserName>
        <CreateTime>1348831860</CreateTime>
        <MsgType><![CDATA[text]]></MsgType>
        <Content><![CDATA[{content}]]></Content>
        <MsgId>{msgid}</MsgId>
    </xml>
    """
# WeRoBot tests/test_parser.py (test_voice_message); Recognition is what WeChat adds when
# the account enables speech recognition (the Recognition field of 接收普通消息, "语音识别结果，
# UTF8编码").
VOICE = """
    <xml>
        <ToUserName><![CDATA[toUser]]></ToUserName>
        <FromUserName><![CDATA[{openid}]]></FromUserName>
        <CreateTime>1357290913</CreateTime>
        <MsgType><![CDATA[voice]]></MsgType>
        <MediaId><![CDATA[media_id]]></MediaId>
        <Format><![CDATA[Format]]></Format>
        <Recognition><![CDATA[{content}]]></Recognition>
        <MsgId>{msgid}</MsgId>
    </xml>
    """
# The same without recognition (the account has not enabled it).
VOICE_PLAIN = VOICE.replace("        <Recognition><![CDATA[{content}]]></Recognition>\n", "")
# WeRoBot tests/test_parser.py: test_image_message, test_location_message, test_link_message.
IMAGE = """
    <xml>
        <ToUserName><![CDATA[toUser]]></ToUserName>
        <FromUserName><![CDATA[{openid}]]></FromUserName>
        <CreateTime>1348831860</CreateTime>
        <MsgType><![CDATA[image]]></MsgType>
        <PicUrl><![CDATA[this is a url]]></PicUrl>
        <MsgId>{msgid}</MsgId>
    </xml>
    """
LOCATION = """
    <xml>
        <ToUserName><![CDATA[toUser]]></ToUserName>
        <FromUserName><![CDATA[{openid}]]></FromUserName>
        <CreateTime>1351776360</CreateTime>
        <MsgType><![CDATA[location]]></MsgType>
        <Location_X>23.134521</Location_X>
        <Location_Y>113.358803</Location_Y>
        <Scale>20</Scale>
        <Label><![CDATA[Location]]></Label>
        <MsgId>{msgid}</MsgId>
    </xml>
    """
LINK = """
    <xml>
        <ToUserName><![CDATA[toUser]]></ToUserName>
        <FromUserName><![CDATA[{openid}]]></FromUserName>
        <CreateTime>1351776360</CreateTime>
        <MsgType><![CDATA[link]]></MsgType>
        <Title><![CDATA[WeRoBot]]></Title>
        <Description><![CDATA[Link to WeRoBot]]></Description>
        <Url><![CDATA[https://github.com/whtsky/WeRoBot]]></Url>
        <MsgId>{msgid}</MsgId>
    </xml>
    """
# WeChat's 接收普通消息 document, 视频消息 (wechatpy's VideoMessage reads the same fields).
VIDEO = """<xml>
  <ToUserName><![CDATA[toUser]]></ToUserName>
  <FromUserName><![CDATA[{openid}]]></FromUserName>
  <CreateTime>1357290913</CreateTime>
  <MsgType><![CDATA[video]]></MsgType>
  <MediaId><![CDATA[media_id]]></MediaId>
  <ThumbMediaId><![CDATA[thumb_media_id]]></ThumbMediaId>
  <MsgId>{msgid}</MsgId>
</xml>"""
# A file message: the fields EasyWeChat's server guide lists for MsgType file (Title,
# Description, FileKey, FileMd5, FileTotalLen), as Senparc.Weixin's RequestMessageFile.
FILE = """<xml>
  <ToUserName><![CDATA[toUser]]></ToUserName>
  <FromUserName><![CDATA[{openid}]]></FromUserName>
  <CreateTime>1357290913</CreateTime>
  <MsgType><![CDATA[file]]></MsgType>
  <Title><![CDATA[报价单.xlsx]]></Title>
  <Description><![CDATA[]]></Description>
  <FileKey><![CDATA[file_key]]></FileKey>
  <FileMd5><![CDATA[5a75aaca956d97be686719218f275c6b]]></FileMd5>
  <FileTotalLen>34213</FileTotalLen>
  <MsgId>{msgid}</MsgId>
</xml>"""
# WeRoBot tests/test_parser.py (test_subscribe_event, the QR-code one; test_scan_event).
SUBSCRIBE_SCENE = """
    <xml><ToUserName><![CDATA[toUser]]></ToUserName>
        <FromUserName><![CDATA[{openid}]]></FromUserName>
        <CreateTime>{ts}</CreateTime>
        <MsgType><![CDATA[event]]></MsgType>
        <Event><![CDATA[subscribe]]></Event>
        <EventKey><![CDATA[qrscene_123123]]></EventKey>
        <Ticket><![CDATA[TICKET]]></Ticket>
    </xml>
    """
SCAN = """
    <xml>
        <ToUserName><![CDATA[toUser]]></ToUserName>
        <FromUserName><![CDATA[{openid}]]></FromUserName>
        <CreateTime>{ts}</CreateTime>
        <MsgType><![CDATA[event]]></MsgType>
        <Event><![CDATA[SCAN]]></Event>
        <EventKey><![CDATA[SCENE_VALUE]]></EventKey>
        <Ticket><![CDATA[TICKET]]></Ticket>
    </xml>
    """
# WeChat's 自定义菜单事件推送 document: 点击菜单拉取消息 (CLICK) and 点击菜单跳转链接 (VIEW).
CLICK = """<xml>
<ToUserName><![CDATA[toUser]]></ToUserName>
<FromUserName><![CDATA[{openid}]]></FromUserName>
<CreateTime>{ts}</CreateTime>
<MsgType><![CDATA[event]]></MsgType>
<Event><![CDATA[CLICK]]></Event>
<EventKey><![CDATA[{content}]]></EventKey>
</xml>"""
VIEW = """<xml>
<ToUserName><![CDATA[toUser]]></ToUserName>
<FromUserName><![CDATA[{openid}]]></FromUserName>
<CreateTime>{ts}</CreateTime>
<MsgType><![CDATA[event]]></MsgType>
<Event><![CDATA[VIEW]]></Event>
<EventKey><![CDATA[www.qq.com]]></EventKey>
</xml>"""
# wechatpy tests/test_events.py: test_scan_code_waitmsg_event, test_scan_code_push_event,
# test_pic_sysphoto_event, test_location_select_event.
SCANCODE_WAITMSG = """<xml>
        <ToUserName><![CDATA[gh_e136c6e50636]]></ToUserName>
        <FromUserName><![CDATA[{openid}]]></FromUserName>
        <CreateTime>{ts}</CreateTime>
        <MsgType><![CDATA[event]]></MsgType>
        <Event><![CDATA[scancode_waitmsg]]></Event>
        <EventKey><![CDATA[6]]></EventKey>
        <ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType>
        <ScanResult><![CDATA[2]]></ScanResult>
        </ScanCodeInfo>
        </xml>"""
SCANCODE_PUSH = SCANCODE_WAITMSG.replace("scancode_waitmsg", "scancode_push")
PIC_SYSPHOTO = """<xml>
        <ToUserName><![CDATA[gh_e136c6e50636]]></ToUserName>
        <FromUserName><![CDATA[{openid}]]></FromUserName>
        <CreateTime>{ts}</CreateTime>
        <MsgType><![CDATA[event]]></MsgType>
        <Event><![CDATA[pic_sysphoto]]></Event>
        <EventKey><![CDATA[6]]></EventKey>
        <SendPicsInfo><Count>1</Count>
        <PicList>
            <item>
            <PicMd5Sum><![CDATA[1b5f7c23b5bf75682a53e7b6d163e185]]></PicMd5Sum>
            </item>
        </PicList>
        </SendPicsInfo>
        </xml>"""
LOCATION_SELECT = """<xml>
        <ToUserName><![CDATA[gh_e136c6e50636]]></ToUserName>
        <FromUserName><![CDATA[{openid}]]></FromUserName>
        <CreateTime>{ts}</CreateTime>
        <MsgType><![CDATA[event]]></MsgType>
        <Event><![CDATA[location_select]]></Event>
        <EventKey><![CDATA[6]]></EventKey>
        <SendLocationInfo><Location_X><![CDATA[23]]></Location_X>
        <Location_Y><![CDATA[113]]></Location_Y>
        <Scale><![CDATA[15]]></Scale>
        <Label><![CDATA[广州市海珠区客村艺苑路 106号]]></Label>
        <Poiname><![CDATA[]]></Poiname>
        </SendLocationInfo>
        </xml>"""
# WeChat's 接收事件推送 document, 上报地理位置事件 (sent on its own, every few seconds).
LOCATION_EVENT = """<xml>
  <ToUserName><![CDATA[toUser]]></ToUserName>
  <FromUserName><![CDATA[{openid}]]></FromUserName>
  <CreateTime>{ts}</CreateTime>
  <MsgType><![CDATA[event]]></MsgType>
  <Event><![CDATA[LOCATION]]></Event>
  <Latitude>23.137466</Latitude>
  <Longitude>113.352425</Longitude>
  <Precision>119.385040</Precision>
</xml>"""
# WeRoBot tests/test_parser.py (test_user_get_card_event): whitespace around the CDATA.
USER_GET_CARD = """
        <xml>
            <ToUserName> <![CDATA[gh_fc0a06a20993]]> </ToUserName>
            <FromUserName> <![CDATA[{openid}]]> </FromUserName>
            <CreateTime>{ts}</CreateTime>
            <MsgType> <![CDATA[event]]> </MsgType>
            <Event> <![CDATA[user_get_card]]> </Event>
            <CardId> <![CDATA[pZI8Fjwsy5fVPRBeD78J4RmqVvBc]]> </CardId>
            <IsGiveByFriend>0</IsGiveByFriend>
            <UserCardCode> <![CDATA[226009850808]]> </UserCardCode>
            <FriendUserName> <![CDATA[]]> </FriendUserName>
            <OuterId>0</OuterId>
        </xml>
    """

MODES = ("plaintext", "compatible", "safe")


@pytest.fixture
async def safe_web(stores: Stores, safe_settings: Settings) -> AsyncIterator[Web]:
    web, server = await start_web(build_app(safe_settings, stores))
    yield web
    server.stop()
    await server.close_all_connections()


class WeChat:
    """Posts a sample as WeChat would in one mode."""

    def __init__(self, mode: str, web: Web, safe_web: Web, settings: Settings,
                 safe_settings: Settings) -> None:
        self.mode = mode
        if mode == "plaintext":
            self.sim = Simulator(f"{web.base_url}/wechat", settings.mp_token)
        else:
            self.sim = Simulator(f"{safe_web.base_url}/wechat", safe_settings.mp_token,
                                 safe_settings.mp_aes_key, safe_settings.mp_appid)

    async def send(self, sample: str, content: str = "", openid: str = OPENID) -> tuple[int, str]:
        xml = (sample.replace("{openid}", openid).replace("{msgid}", str(next(_ids)))
               .replace("{ts}", str(next(_times))).replace("{content}", content))
        delivery = await self.sim.post(self.sim.prepare(openid, xml=xml,
                                                        compatible=self.mode == "compatible"))
        assert delivery.status == 200, (self.mode, delivery.raw[:200])
        if self.mode == "safe" and delivery.raw != b"success":
            assert b"<Encrypt>" in delivery.raw
        return delivery.status, delivery.text


@pytest.fixture(params=MODES)
def wechat(request: pytest.FixtureRequest, web: Web, safe_web: Web, settings: Settings,
           safe_settings: Settings) -> WeChat:
    return WeChat(request.param, web, safe_web, settings, safe_settings)


async def test_messages_get_answers(wechat: WeChat) -> None:
    assert (await wechat.send(TEXT, "帮助"))[1].startswith("可用命令")
    for sample, said in ((IMAGE, "收到图片。"), (LOCATION, "收到位置。"), (LINK, "收到链接。"),
                         (VIDEO, "收到视频。"), (FILE, "收到文件。")):
        assert (await wechat.send(sample))[1] == said + hints.CAN_DO, said
    assert (await wechat.send(VOICE_PLAIN))[1] == hints.VOICE_WITHOUT_RECOGNITION


@pytest.mark.parametrize(("spoken", "reply"), [
    ("帮助。", "可用命令"), ("列表？", "你还没有规则"),
    ("添加，苹果，梨子。", "已添加 01：苹果 → 梨子"),
    ("Meow~", "没看懂“Meow”"),  # WeRoBot's sample: not a command, answered as text is
])
async def test_voice_recognition_is_a_command(wechat: WeChat, spoken: str, reply: str) -> None:
    assert (await wechat.send(VOICE, spoken))[1].startswith(reply)


async def test_voice_commands_act_like_typed_ones(wechat: WeChat, stores: Stores) -> None:
    await wechat.send(VOICE, "添加 苹果 梨子。")
    assert (await wechat.send(VOICE, "列表。"))[1] == "你的规则（共 1 条）：\n01 苹果 → 梨子"
    assert (await wechat.send(VOICE, "删除 01。 "))[1] == "已删除 01：苹果 → 梨子"


async def test_menu_clicks(wechat: WeChat) -> None:
    for key in ("help", "帮助"):
        assert (await wechat.send(CLICK, key))[1].startswith("可用命令")
    assert (await wechat.send(CLICK, "list"))[1] == "你还没有规则。添加一条试试：添加 苹果 梨子"
    assert "用户编号：" in (await wechat.send(CLICK, "status"))[1]
    # Any other key: a short help, the key itself never shown.
    for key in ("EVENTKEY", "V1001_TODAY_MUSIC", "<b>菜单</b>"):
        text = (await wechat.send(CLICK, key))[1]
        assert text == hints.UNKNOWN_MENU
        assert key not in text
    # scancode_waitmsg: the client shows "消息接收中" until a reply comes.
    assert (await wechat.send(SCANCODE_WAITMSG))[1] == hints.SCAN_RECEIVED


async def test_events_that_need_no_reply_get_success(wechat: WeChat) -> None:
    for sample in (VIEW, SCANCODE_PUSH, PIC_SYSPHOTO, LOCATION_SELECT, LOCATION_EVENT,
                   USER_GET_CARD):
        status, text = await wechat.send(sample)
        assert (status, text) == (200, "")


async def test_subscribe_with_a_scene_and_scan(wechat: WeChat, stores: Stores) -> None:
    greeting = (await wechat.send(SUBSCRIBE_SCENE))[1]
    assert greeting.startswith("欢迎关注微信回复助手！你的用户编号是 1000。")
    doc = await stores.db["users"].find_one({"openid": OPENID})
    assert doc is not None
    assert doc["scene"] == "123123"
    # SCAN: a follower scans another QR code of the account: a returning user.
    back = (await wechat.send(SCAN))[1]
    assert back == f"欢迎回来！你的用户编号是 1000。\n{hints.SHORT_HELP}"
    doc = await stores.db["users"].find_one({"openid": OPENID})
    assert doc is not None
    assert doc["scene"] == "SCENE_VALUE"
    assert await stores.db["users"].count_documents({}) == 1


async def test_scan_from_someone_we_never_saw_registers_them(wechat: WeChat,
                                                              stores: Stores) -> None:
    # They followed before this server was connected: no subscribe ever reached us.
    text = (await wechat.send(SCAN, openid="o-genuine-old-follower-0001"))[1]
    assert text.startswith("欢迎回来！你的用户编号是 1000。")
    assert await stores.users.by_openid("o-genuine-old-follower-0001") is not None


@pytest.mark.parametrize("pasted", [
    "<!DOCTYPE html><html><body>hi</body></html>",
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
    "What does <!ENTITY lol \"lol\"> do in XML?",
])
async def test_pasted_markup_is_just_text(wechat: WeChat, pasted: str) -> None:
    status, text = await wechat.send(TEXT, pasted)
    assert status == 200
    assert text.startswith("没看懂“")


@pytest.mark.parametrize("unit", ["字", "😀", "a"])
async def test_long_texts_get_a_friendly_answer(wechat: WeChat, unit: str) -> None:
    # 5,000 characters: far past the old 8,192-character cap on <Encrypt> in safe mode.
    status, text = await wechat.send(TEXT, unit * 5000)
    assert status == 200
    assert text.startswith("这段文字有 5000 个字，不是命令。")
    status, text = await wechat.send(TEXT, "添加 长 " + unit * 5000)
    assert text.startswith("回复最多 600 个字，现在是 5000 个字")
