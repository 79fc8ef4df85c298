"""The official-account wire protocol: signatures, safe XML, AES envelopes, replies.

Pure functions (no I/O), used by the ``/wechat`` handler on the server side and by the
``wxreply chat`` simulator on the WeChat side, so that both sides of every test speak
exactly the same protocol.  Crypto and reply rendering are wechatpy's.

Hostile input is the norm here: the body of a push is attacker-controlled until its
signature is checked, and in plaintext mode the signature does not cover the body at all.
So the XML parser refuses a DTD (and with it every entity declaration) at the moment
expat meets the declaration, refuses duplicate tags, and the fields we act on are
length-checked before anything else looks at them.  Text *inside* the document is never
searched for markup: a user who pastes ``<!DOCTYPE html>`` into the chat sends CDATA, and
gets an answer like any other text.

Sizes follow what WeChat can send: the whole body is capped (64 KiB, in the handler), and
within it no field is, since a long text (and, in safe mode, the ``<Encrypt>`` field that
carries it, a third longer) is a genuine push that deserves an answer, not a 400.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import time
from typing import Any, NoReturn
from xml.parsers import expat

import xmltodict
from wechatpy.crypto import PrpCrypto, WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException
from wechatpy.replies import TextReply

MAX_BODY_BYTES = 64 * 1024
MAX_REPLY_BYTES = 2048
# Menu keys are at most 128 bytes and QR scene strings 64 characters (WeChat's menu and
# QR-code API documents); anything much longer in <EventKey> is not from WeChat.
MAX_EVENT_KEY_CHARS = 1024


def xml_char_ok(ch: str) -> bool:
    """A character XML 1.0 allows (its ``Char`` production): tab, LF, CR, U+0020-U+D7FF,
    U+E000-U+FFFD and U+10000 up.  Everything else (most C0 controls, lone surrogates,
    U+FFFE, U+FFFF) makes a reply that WeChat cannot parse."""
    code = ord(ch)
    if code < 0x20:
        return ch in "\t\n\r"
    return code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or code >= 0x10000


def strip_non_xml(text: str) -> str:
    """``text`` without the characters XML 1.0 forbids (see :func:`xml_char_ok`)."""
    if all(xml_char_ok(ch) for ch in text):
        return text
    return "".join(ch for ch in text if xml_char_ok(ch))


class ProtocolError(ValueError):
    """A push we refuse; ``str(err)`` is safe to log (no body content)."""


class SignatureError(ProtocolError):
    """Bad or missing signature (a 403: the request is not from WeChat)."""


def signature(token: str, timestamp: str, nonce: str, *extra: str) -> str:
    """WeChat's SHA-1 over the sorted strings (``msg_signature`` adds the ciphertext)."""
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, *extra])).encode()).hexdigest()  # noqa: S324 - WeChat's protocol


def check_signature(token: str, sig: str, timestamp: str, nonce: str, *extra: str) -> bool:
    return hmac.compare_digest(signature(token, timestamp, nonce, *extra), sig.lower())


def _refuse_dtd(*_args: object) -> NoReturn:
    raise ProtocolError("DTD or entity declaration")


class _GuardedExpat:
    """pyexpat as xmltodict sees it, except that every parser it creates refuses a
    document type declaration the moment expat reads one (``<!DOCTYPE``: the only place
    an entity can be declared, so billion laughs and external entities go with it), and
    any entity declaration that got that far.  WeChat never sends a DTD."""

    ExpatError = expat.ExpatError

    @staticmethod
    def ParserCreate(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - pyexpat's name
        parser = expat.ParserCreate(*args, **kwargs)
        parser.StartDoctypeDeclHandler = _refuse_dtd
        parser.EntityDeclHandler = _refuse_dtd
        parser.ExternalEntityRefHandler = _refuse_dtd
        return parser


def parse_xml(text: str) -> dict[str, str]:
    """Parse a flat ``<xml>…</xml>`` document into ``{tag: text}``.

    Refused: a DTD or entity declaration (billion laughs, external entities; refused by
    the parser when it meets one, so the same words inside CDATA are just text), a root
    other than ``xml``, duplicate tags.  Nested blocks (``ScanCodeInfo``,
    ``SendLocationInfo``) are flattened one level (``ScanCodeInfo.ScanResult``) and
    anything deeper dropped.  Raises :class:`ProtocolError` with a short reason.
    """
    try:
        doc = xmltodict.parse(text, expat=_GuardedExpat, disable_entities=True)
    except ProtocolError:
        raise
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
            # Nested blocks of menu events (ScanCodeInfo, SendLocationInfo): their flat
            # fields are kept as "Block.Field"; deeper lists (SendPicsInfo) are dropped.
            for inner, item in value.items():
                if isinstance(item, str | None) and not inner.startswith("@"):
                    out[f"{key}.{inner}"] = item or ""
            continue
        out[key] = "" if value is None else str(value)
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
    # Characters XML forbids never reach a reply, whatever a rule or a nickname holds.
    reply = TextReply(source=from_user, target=to_user,
                      content=cdata_safe(truncate_utf8(strip_non_xml(content))),
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
    recognition: str = ""     # voice: WeChat's speech recognition, when enabled
    scan_result: str = ""     # scancode_push / scancode_waitmsg menu events
    ticket: str = ""          # subscribe/SCAN through a QR code with a scene

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
        if len(fields.get("EventKey", "")) > MAX_EVENT_KEY_CHARS:
            raise ProtocolError("<EventKey> too long")
        return cls(
            to_user=fields["ToUserName"],
            from_user=fields["FromUserName"],
            create_time=fields["CreateTime"],
            msg_type=fields["MsgType"].lower(),
            msg_id=msg_id,
            content=fields.get("Content", ""),
            event=fields.get("Event", "").lower(),
            event_key=fields.get("EventKey", ""),
            recognition=fields.get("Recognition", ""),
            scan_result=fields.get("ScanCodeInfo.ScanResult", ""),
            ticket=fields.get("Ticket", ""),
        )

    @property
    def dedup_key(self) -> str:
        """The identity of a push across WeChat's retries (docs/OFFICIAL_ACCOUNT.md)."""
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
        return self.decrypt(encrypted)

    def decrypt(self, encrypted: str) -> str:
        """Decrypt an ``<Encrypt>`` field whose signature the caller has checked."""
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
                   event_key: str | None = None, extra: dict[str, str] | None = None) -> str:
    """A push as WeChat's servers build it (``extra``: more fields, such as
    ``Recognition`` of a voice message, as CDATA)."""
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
    for tag, value in (extra or {}).items():
        parts.append(f"<{tag}><![CDATA[{cdata_safe(value)}]]></{tag}>")
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
