"""Web WeChat messages beyond plain text, as ``webwxsync`` delivers them in ``AddMsgList``.

Used by :meth:`sandbox.webwx.FakeWebWx.push_message`.  Each kind gives ``MsgType``,
``Content`` (HTML-escaped XML where the real service sends XML, as itchat's
``msg_formatter`` unescapes it) and the extra fields that go with it.  Sources:

* the type numbers and the fields each type fills in: iKuiki/wwdk
  ``doc/message/messageType.md`` (a web-WeChat client's notes from recorded payloads:
  3 image with ``ImgHeight``/``ImgWidth``, 47 emoticon, 49 with ``AppMsgType`` 5 link / 6
  file / 57 quoted reply, 10000 system notices, 10002 recalls); wechaty's simple-pad
  message types (51 ``StatusNotify``); itchat's own ``produce_msg`` (which fields it
  reads for each type);
* a recall's ``<revokemsg>`` body (session, msgid, newmsgid, replacemsg): wechaty
  puppet-padpro's ``recalledPayloadParser`` comment with a recorded one;
* 51 with ``StatusNotifyCode`` 2 (ENTER_SESSION) is what web WeChat receives each time
  the owner opens a chat on the phone (the web client's own constants: 1 READED,
  2 ENTER_SESSION, 3 INITED, 4 SYNC_CONV, 5 QUIT_SESSION);
* emoji inside a text arrive as ``<span class="emoji emoji1f604"></span>`` (itchat's
  ``utils.emoji_formatter`` turns them back into characters);
* WeChat's own restriction notices (MsgType 10000, from the chat or from ``weixin``):
  the texts owners quote when an account is limited, e.g. "操作过于频繁" and
  "你的帐号…被限制" (https://github.com/littlecodersh/ItChat/issues/561 and the
  ehForwarderBot wiki page it links, "potential actions that trigger Web WeChat ban").
"""

from __future__ import annotations

import html
from typing import Any

# The restriction texts WeChat sends as system notices (see the module doc).
SEND_TOO_OFTEN = "你发送消息过于频繁，请稍后再试。"
ACCOUNT_RESTRICTED = "你的帐号存在异常，暂时被限制使用网页版微信发送消息。"

KINDS = ("image", "voice", "video", "emoticon", "link", "file", "quote", "system",
         "too_often", "restricted", "recall", "status", "emoji_text")


def _xml(text: str) -> str:
    return html.escape(text, quote=False)


def sample(kind: str, from_user: str, to_user: str, *, msg_id: int) -> dict[str, Any]:
    """The fields of one message of ``kind`` (see :data:`KINDS`) over the text defaults."""
    if kind == "image":
        return {"MsgType": 3, "ImgHeight": 120, "ImgWidth": 67, "ImgStatus": 2,
                "Content": _xml('<?xml version="1.0"?><msg><img aeskey="0f3a" '
                                'encryver="1" length="20480" md5="9a1c" /></msg>')}
    if kind == "voice":
        return {"MsgType": 34, "VoiceLength": 2303,
                "Content": _xml('<msg><voicemsg endflag="1" voiceformat="4" '
                                'voicelength="2303" length="3304" /></msg>')}
    if kind == "video":
        return {"MsgType": 43, "PlayLength": 7, "ImgHeight": 240, "ImgWidth": 320,
                "Content": _xml('<?xml version="1.0"?><msg><videomsg length="102400" '
                                'playlength="7" /></msg>')}
    if kind == "emoticon":
        return {"MsgType": 47, "ImgHeight": 100, "ImgWidth": 100, "ImgStatus": 2,
                "Content": _xml('<msg><emoji fromusername="x" type="2" md5="9122f8" '
                                'len="73241" /></msg>')}
    if kind == "link":
        return {"MsgType": 49, "AppMsgType": 5, "FileName": "价格表",
                "Url": "http://127.0.0.1/article",
                "Content": _xml('<msg><appmsg type="5"><title>价格表</title>'
                                '<url>http://127.0.0.1/article</url></appmsg></msg>')}
    if kind == "file":
        return {"MsgType": 49, "AppMsgType": 6, "FileName": "价格.pdf", "FileSize": "1024",
                "MediaId": "@crypt_media",
                "Content": _xml('<msg><appmsg type="6"><title>价格.pdf</title>'
                                '</appmsg></msg>')}
    if kind == "quote":
        # A quoted reply: AppMsgType 57, the reply's own text in <title> — it still
        # reads "价格" but is not a text message: never answered.
        return {"MsgType": 49, "AppMsgType": 57, "FileName": "价格",
                "Content": _xml('<msg><appmsg type="57"><title>价格</title><refermsg>'
                                '<content>多少钱</content></refermsg></appmsg></msg>')}
    if kind == "system":
        return {"MsgType": 10000, "Status": 4, "Content": "你已添加了小明，现在可以开始聊天了。"}
    if kind == "too_often":
        return {"MsgType": 10000, "Status": 4, "Content": SEND_TOO_OFTEN}
    if kind == "restricted":
        return {"MsgType": 10000, "Status": 4, "Content": ACCOUNT_RESTRICTED}
    if kind == "recall":
        return {"MsgType": 10002,
                "Content": _xml(f'<sysmsg type="revokemsg"><revokemsg><session>{from_user}'
                                f'</session><msgid>{msg_id - 1}</msgid><newmsgid>'
                                f'{msg_id - 1}</newmsgid><replacemsg><![CDATA["朋友" 撤回了'
                                '一条消息]]></replacemsg></revokemsg></sysmsg>')}
    if kind == "status":
        # The owner opened a chat on the phone: from the owner to that chat.
        return {"MsgType": 51, "StatusNotifyCode": 2, "StatusNotifyUserName": to_user,
                "Content": ""}
    if kind == "emoji_text":
        return {"MsgType": 1,
                "Content": '价格<span class="emoji emoji1f604"></span>'}
    raise ValueError(f"unknown message kind {kind!r}; one of {', '.join(KINDS)}")
