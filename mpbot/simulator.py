"""A stand-in for WeChat's servers: build a push exactly as they do, post it, read the reply.

Used by ``wxreply chat`` (try every command without a WeChat account) and by the tests,
so the tests exercise the same wire format a real official account produces: signature
over token/timestamp/nonce, and in safe mode the AES envelope with ``msg_signature``,
``encrypt_type=aes`` and the ``openid`` query parameter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import urllib.parse
from collections.abc import Callable

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from config.clock import wall_clock
from mpbot.protocol import (
    Envelope,
    build_push_xml,
    new_msg_id,
    new_nonce,
    parse_xml,
    read_reply,
    signed_query,
)

DEFAULT_OPENID = "oWXR_local_tester_000000001"
DEFAULT_ACCOUNT = "gh_wxreply_local"


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    status: int
    text: str           # the reply's text content ('' for "success"/no reply)
    raw: bytes
    elapsed: float


@dataclasses.dataclass(frozen=True, slots=True)
class PreparedPush:
    url: str
    body: bytes
    # Compatible mode: WeChat takes a plaintext reply as well as a sealed one.
    compatible: bool = False


class Simulator:
    def __init__(self, url: str, token: str, aes_key: str = "", appid: str = "", *,
                 account: str = DEFAULT_ACCOUNT, now: Callable[[], float] = wall_clock,
                 timeout: float = 10.0, http: AsyncHTTPClient | None = None) -> None:
        self.url = url
        self.token = token
        self.envelope = Envelope(token, aes_key, appid) if aes_key else None
        self.account = account
        self.now = now
        self.timeout = timeout
        self.http = http  # None: Tornado's shared client (at most 10 requests at once)

    def prepare(self, openid: str = DEFAULT_OPENID, text: str | None = None, *,
                event: str | None = None, event_key: str | None = None,
                msg_type: str | None = None, msg_id: str | None = None,
                nonce: str | None = None, timestamp: int | None = None,
                xml: str | None = None, extra: dict[str, str] | None = None,
                compatible: bool = False) -> PreparedPush:
        """The URL and body of one push.  ``xml`` overrides the generated inner XML (for
        hostile-input tests); everything else is signed and sealed as WeChat does.
        ``compatible``: in compatible mode WeChat's body carries the plaintext fields and
        ``<Encrypt>`` side by side (needs a key)."""
        ts = str(int(self.now()) if timestamp is None else timestamp)
        nonce = nonce or new_nonce()
        if xml is None:
            if event is not None:
                xml = build_push_xml(to_user=self.account, from_user=openid,
                                     create_time=int(ts), msg_type="event", event=event,
                                     event_key=event_key, extra=extra)
            else:
                xml = build_push_xml(to_user=self.account, from_user=openid,
                                     create_time=int(ts), msg_type=msg_type or "text",
                                     content=text if text is not None else "",
                                     msg_id=msg_id or new_msg_id(), extra=extra)
        query = signed_query(self.token, ts, nonce, openid=openid)
        body = xml
        if self.envelope is not None:
            sealed = self.envelope.seal(xml, nonce, ts)
            outer = parse_xml(sealed)
            query.update(encrypt_type="aes", msg_signature=outer["MsgSignature"])
            encrypt = f"<Encrypt><![CDATA[{outer['Encrypt']}]]></Encrypt>"
            if compatible:
                body = xml.replace("</xml>", encrypt + "</xml>")
            else:
                # WeChat's safe-mode body carries only ToUserName and Encrypt.
                body = (f"<xml><ToUserName><![CDATA[{self.account}]]></ToUserName>"
                        f"{encrypt}</xml>")
        return PreparedPush(f"{self.url}?{urllib.parse.urlencode(query)}", body.encode(),
                            compatible and self.envelope is not None)

    async def post(self, push: PreparedPush) -> Delivery:
        started = time.monotonic()
        response = await (self.http or AsyncHTTPClient()).fetch(
            HTTPRequest(push.url, method="POST", body=push.body,
                        headers={"Content-Type": "text/xml"}, request_timeout=self.timeout),
            raise_error=False,
        )
        raw = response.body or b""
        text = ""
        if response.code == 200:
            sealed = self.envelope is not None and not (push.compatible
                                                         and b"<Encrypt>" not in raw)
            text = read_reply(raw.decode(), self.envelope if sealed else None, self.token)
        return Delivery(response.code, text, raw, time.monotonic() - started)

    async def send(self, text: str, openid: str = DEFAULT_OPENID, **kwargs: object) -> Delivery:
        return await self.post(self.prepare(openid, text, **kwargs))  # type: ignore[arg-type]

    async def send_times(self, push: PreparedPush, times: int) -> list[Delivery]:
        """The same push delivered ``times`` times at once, as WeChat's retries can be."""
        return list(await asyncio.gather(*(self.post(push) for _ in range(times))))
