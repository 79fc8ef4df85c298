"""The official-account wire protocol: signatures, safe XML, AES envelopes, replies.

Pure functions (no I/O), used by the ``/wechat`` handler on the server side and by the
``wxreply chat`` simulator on the WeChat side, so that both sides of every test speak
exactly the same protocol.  Crypto and reply rendering are wechatpy's.

Hostile input is the norm here: the body of a push is attacker-controlled until its
signature is checked, and in plaintext mode the signature does not cover the body at all.
So the XML parser refuses DTDs and entities outright, refuses duplicate and nested tags,
and every field is length-capped before anything else looks at it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import time

import xmltodict
from wechatpy.crypto import PrpCrypto, WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException
from wechatpy.replies import TextReply

MAX_BODY_BYTES = 64 * 1024
MAX_REPLY_BYTES = 2048
# Fields of a push we read; anything longer than this is not from WeChat.
MAX_FIELD_CHARS = 8192


class ProtocolError(ValueError):
    """A push we refuse; ``str(err)`` is safe to log (no body content)."""


class SignatureError(ProtocolError):
    """Bad or missing signature (a 403: the request is not from WeChat)."""


def signature(token: str, timestamp: str, nonce: str, *extra: str) -> str:
    """WeChat's SHA-1 over the sorted strings (``msg_signature`` adds the ciphertext)."""
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, *extra])).encode()).hexdigest()  # noqa: S324 - WeChat's protocol


def check_signature(token: str, sig: str, timestamp: str, nonce: str, *extra: str) -> bool:
    return hmac.compare_digest(signature(token, timestamp, nonce, *extra), sig.lower())


def parse_xml(text: str) -> dict[str, str]:
    """Parse a flat ``<xml>…</xml>`` document into ``{tag: text}``.

    Refused: DTDs and entity declarations (billion-laughs and external entities), a root
    other than ``xml``, duplicate tags, nested elements other than the few WeChat uses,
    and oversized fields.  Raises :class:`ProtocolError` with a short reason.
    """
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        raise ProtocolError("DTD or entity declaration")
    try:
        doc = xmltodict.parse(text, disable_entities=True)
    except Exception as exc:  # expat's ExpatError and friends
        raise ProtocolError(f"malformed XML ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or list(doc) != ["xml"]:
        raise ProtocolError("root element is not <xml>")
    body = doc["xml"]
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ProtocolError("empty or text-only <xml>")
    out: dict[str, str] = {}
    for key, value in body.items():
        if key.startswith("@"):
            continue  # attributes: WeChat sends none; ignore rather than fail
        if isinstance(value, list):
            raise ProtocolError(f"duplicate <{key}>")
        if isinstance(value, dict):
            # Nested blocks (e.g. ScanCodeInfo, SendLocationInfo in menu events) carry
            # nothing we act on; keep the push but drop the block.
            continue
        value = "" if value is None else str(value)
        if len(value) > MAX_FIELD_CHARS:
            raise ProtocolError(f"<{key}> too long")
        out[key] = value
    return out


def cdata_safe(text: str) -> str:
    """Escape ``]]>`` (it would end the CDATA section wechatpy wraps content in)."""
    return text.replace("]]>", "]]]]><![CDATA[>")


def truncate_utf8(text: str, limit: int = MAX_REPLY_BYTES, marker: str = "…") -> str:
    """Cut ``text`` so that its UTF-8 form fits ``limit`` bytes, on a character boundary."""
    data = text.encode()
    if len(data) <= limit:
        return text
    room = limit - len(marker.encode())
    return data[:room].decode(errors="ignore") + marker


def render_text(to_user: str, from_user: str, content: str, now: float | None = None) -> str:
    """A passive text reply (XML), content capped at 2048 UTF-8 bytes and CDATA-safe."""
    reply = TextReply(source=from_user, target=to_user,
                      content=cdata_safe(truncate_utf8(content)),
                      time=int(time.time() if now is None else now))
    return str(reply.render())


@dataclasses.dataclass(frozen=True, slots=True)
class Push:
    """The fields of a push that we act on."""

    to_user: str
    from_user: str
    create_time: str
    msg_type: str
    msg_id: str = ""
    content: str = ""
    event: str = ""
    event_key: str = ""

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> Push:
        for required in ("ToUserName", "FromUserName", "CreateTime", "MsgType"):
            if not fields.get(required):
                raise ProtocolError(f"missing <{required}>")
        if not fields["CreateTime"].isdigit() or len(fields["CreateTime"]) > 12:
            raise ProtocolError("bad <CreateTime>")
        if len(fields["FromUserName"]) > 128 or len(fields["ToUserName"]) > 128:
            raise ProtocolError("user name too long")
        msg_id = fields.get("MsgId", "")
        if msg_id and (not msg_id.isdigit() or len(msg_id) > 24):
            raise ProtocolError("bad <MsgId>")
        return cls(
            to_user=fields["ToUserName"],
            from_user=fields["FromUserName"],
            create_time=fields["CreateTime"],
            msg_type=fields["MsgType"].lower(),
            msg_id=msg_id,
            content=fields.get("Content", ""),
            event=fields.get("Event", "").lower(),
            event_key=fields.get("EventKey", ""),
        )

    @property
    def dedup_key(self) -> str:
        """The identity of a push across WeChat's retries (DESIGN §5)."""
        if self.msg_type == "event" or not self.msg_id:
            return f"{self.from_user}:e:{self.create_time}:{self.event}:{self.event_key}"
        return f"{self.from_user}:m:{self.msg_id}"


class Envelope:
    """AES "safe mode" envelopes (wechatpy's WeChatCrypto), for both directions."""

    def __init__(self, token: str, aes_key: str, appid: str) -> None:
        self.token = token
        self.appid = appid
        self._crypto = WeChatCrypto(token, aes_key, appid)

    def open(self, body: str, msg_signature: str, timestamp: str, nonce: str) -> str:
        """Verify ``msg_signature`` and decrypt; the inner XML as text."""
        outer = parse_xml(body)
        encrypted = outer.get("Encrypt")
        if not encrypted:
            raise ProtocolError("missing <Encrypt>")
        if not check_signature(self.token, msg_signature, timestamp, nonce, encrypted):
            raise SignatureError("bad msg_signature")
        try:
            return str(PrpCrypto(self._crypto.key).decrypt(encrypted, self.appid))
        except InvalidAppIdException:
            raise ProtocolError("AppID in the ciphertext is not ours") from None
        except Exception as exc:  # bad base64, bad padding, bad length: not WeChat
            raise ProtocolError(f"undecryptable ciphertext ({type(exc).__name__})") from None

    def seal(self, xml: str, nonce: str, timestamp: str) -> str:
        """Encrypt and sign a reply (or, in the simulator, a push)."""
        return str(self._crypto.encrypt_message(xml, nonce, timestamp))


# -- the WeChat side, for the simulator and the tests ---------------------------------


def new_nonce() -> str:
    return str(secrets.randbelow(10**10))


def new_msg_id() -> str:
    return str(secrets.randbelow(2**63))


def build_push_xml(*, to_user: str, from_user: str, create_time: int, content: str | None = None,
                   msg_id: str | None = None, msg_type: str = "text", event: str | None = None,
                   event_key: str | None = None) -> str:
    """A push as WeChat's servers build it."""
    parts = [
        f"<ToUserName><![CDATA[{to_user}]]></ToUserName>",
        f"<FromUserName><![CDATA[{from_user}]]></FromUserName>",
        f"<CreateTime>{create_time}</CreateTime>",
        f"<MsgType><![CDATA[{msg_type}]]></MsgType>",
    ]
    if event is not None:
        parts.append(f"<Event><![CDATA[{event}]]></Event>")
        if event_key is not None:
            parts.append(f"<EventKey><![CDATA[{cdata_safe(event_key)}]]></EventKey>")
    if content is not None:
        parts.append(f"<Content><![CDATA[{cdata_safe(content)}]]></Content>")
    if msg_id is not None:
        parts.append(f"<MsgId>{msg_id}</MsgId>")
    return "<xml>" + "".join(parts) + "</xml>"


def signed_query(token: str, timestamp: str, nonce: str, **extra: str) -> dict[str, str]:
    return {"signature": signature(token, timestamp, nonce), "timestamp": timestamp,
            "nonce": nonce, **extra}


def read_reply(body: str, envelope: Envelope | None, token: str) -> str:
    """The text content of a reply as WeChat would show it ('' for no reply).

    In safe mode the reply's own signature is checked first, as WeChat does."""
    if body in ("", "success"):
        return ""
    if envelope is not None:
        outer = parse_xml(body)
        if not check_signature(token, outer.get("MsgSignature", ""), outer.get("TimeStamp", ""),
                               outer.get("Nonce", ""), outer.get("Encrypt", "")):
            raise SignatureError("reply has a bad MsgSignature")
        body = envelope.open(body, outer["MsgSignature"], outer["TimeStamp"], outer["Nonce"])
    fields = parse_xml(body)
    return fields.get("Content", "")
