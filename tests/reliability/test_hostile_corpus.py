"""The hostile-input corpus (``corpus/``) and property tests of the XML handler and the
command parser: 0 crashes, 0 5xx, a clear answer for each.

``corpus/wechat/*.xml`` are push bodies (``{openid}`` is filled in), posted with a valid
signature so that they reach the parser; ``corpus/chat/*.txt`` are chat messages that
must get a reply; ``corpus/paths/*.txt`` are URL paths that must get a 4xx.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from mpbot.commands import TABLE
from mpbot.parse import NotACommand, ParseError, parse_command
from mpbot.protocol import ProtocolError, Push, parse_xml, signed_query
from mpbot.simulator import PreparedPush, Simulator
from store import Stores
from tests.conftest import TEST_TOKEN, Web

CORPUS = Path(__file__).parent / "corpus"
OPENID = "o-hostile-000000000000001"


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Records that mean "something crashed": errors, or anything with a traceback."""
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.ERROR or r.exc_info is not None]


def _signed_url(web: Web, openid: str = OPENID) -> str:
    query = signed_query(TEST_TOKEN, str(int(time.time())), str(time.monotonic_ns()),
                         openid=openid)
    return f"{web.base_url}/wechat?{urllib.parse.urlencode(query)}"


async def _post(url: str, body: bytes) -> tuple[int, bytes]:
    try:
        response = await AsyncHTTPClient().fetch(
            HTTPRequest(url, method="POST", body=body, request_timeout=30), raise_error=False)
    except OSError:
        return 0, b""  # the server closed the connection: a refusal too
    return response.code, response.body or b""


async def test_wechat_corpus(web: Web, stores: Stores, caplog: pytest.LogCaptureFixture,
                             figures: dict[str, Any]) -> None:
    caplog.set_level(logging.INFO)
    cases = sorted((CORPUS / "wechat").glob("*.xml"))
    assert len(cases) >= 25
    outcomes: dict[int, int] = {}
    wrong: list[tuple[str, int]] = []
    tracebacks = 0
    for case in cases:
        body = case.read_bytes().replace(b"{openid}", OPENID.encode())
        status, answer = await _post(_signed_url(web), body)
        if status not in (200, 400, 403, 413):
            wrong.append((case.name, status))
        tracebacks += b"Traceback" in answer
        outcomes[status] = outcomes.get(status, 0) + 1
    # Generated: a 10 MB body, a body of invalid UTF-8, an empty one.
    generated = {"10 MB": b"<xml>" + b"A" * (10 * 1024 * 1024) + b"</xml>",
                 "latin-1": "<xml><Content>é</Content></xml>".encode("latin-1"),
                 "empty": b""}
    for name, body in generated.items():
        status, answer = await _post(_signed_url(web), body)
        if status not in (0, 400, 413):
            wrong.append((name, status))
        outcomes[status] = outcomes.get(status, 0) + 1
    errors = _errors(caplog)
    figures.update({"wechat_bodies": len(cases) + len(generated),
                    "crashes": len(errors) + tracebacks,
                    "http_5xx": sum(n for status, n in outcomes.items() if status >= 500),
                    "answers": {str(k): v for k, v in sorted(outcomes.items())}})
    assert wrong == []
    assert tracebacks == 0
    assert await stores.db["rules"].count_documents({}) == 0  # nothing got through
    assert errors == []


async def test_chat_corpus(chat: Any, caplog: pytest.LogCaptureFixture,
                           figures: dict[str, Any]) -> None:
    caplog.set_level(logging.INFO)
    cases = sorted((CORPUS / "chat").glob("*.txt"))
    assert len(cases) >= 20
    no_reply: list[str] = []
    too_long: list[str] = []
    for case in cases:
        reply = await chat(case.read_text(), OPENID)
        if not reply:
            no_reply.append(case.name)
        elif len(reply.encode()) > 2048:
            too_long.append(case.name)
    # 4-byte emoji and RTL text are ordinary keywords.
    listing = await chat("列表", OPENID)
    errors = _errors(caplog)
    figures.update({"chat_messages": len(cases), "crashes": len(errors),
                    "without_reply": len(no_reply), "replies_over_2048_bytes": len(too_long)})
    assert no_reply == []
    assert too_long == []
    assert "😀🙈🙉" in listing
    assert "שלום" in listing
    assert errors == []


async def test_path_corpus(web: Web, caplog: pytest.LogCaptureFixture,
                           figures: dict[str, Any]) -> None:
    caplog.set_level(logging.INFO)
    paths = [line for line in (CORPUS / "paths" / "traversal.txt").read_text().splitlines()
             if line]
    client = AsyncHTTPClient()
    statuses: dict[int, int] = {}
    wrong: list[tuple[str, int]] = []
    leaked: list[str] = []
    for path in paths:
        response = await client.fetch(f"{web.base_url}{path}", raise_error=False)
        statuses[response.code] = statuses.get(response.code, 0) + 1
        if response.code not in (400, 403, 404):
            wrong.append((path, response.code))
        body = response.body or b""
        # No traceback, no secret, nothing reflected unescaped.
        if b"Traceback" in body or b"secret" in body or b"<script>" in body:
            leaked.append(path)
    errors = _errors(caplog)
    figures.update({"paths": len(paths), "crashes": len(errors),
                    "answers": {str(k): v for k, v in sorted(statuses.items())},
                    "reflected_or_leaked": len(leaked)})
    assert wrong == []
    assert leaked == []
    assert errors == []


# -- properties --------------------------------------------------------------------------

XML_TAGS = ["xml", "ToUserName", "FromUserName", "CreateTime", "MsgType", "Content", "MsgId",
            "Event", "EventKey", "Encrypt", "a"]


@st.composite
def xmlish(draw: st.DrawFn) -> str:
    """Text that is often almost, sometimes exactly, a push."""
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        tag = draw(st.sampled_from(XML_TAGS))
        inner = draw(st.one_of(st.text(max_size=20), st.integers().map(str),
                               st.sampled_from(["<![CDATA[x]]>", "]]>", "&amp;", "&e;", "<"])))
        parts.append(f"<{tag}>{inner}</{tag}>" if draw(st.booleans()) else f"<{tag}>{inner}")
    text = "".join(parts)
    return f"<xml>{text}</xml>" if draw(st.booleans()) else text


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), xmlish()))
def test_parse_xml_and_push_raise_only_protocol_errors(text: str) -> None:
    try:
        Push.from_fields(parse_xml(text))
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parser_answers_every_text(text: str) -> None:
    try:
        outcome: object = parse_command(text, TABLE)
    except (ParseError, NotACommand) as err:
        outcome = err
    if isinstance(outcome, ParseError):
        assert outcome.reply.startswith(outcome.problem)
        assert "正确格式：" in outcome.reply
    elif not isinstance(outcome, NotACommand):
        assert outcome.command in list(TABLE)  # type: ignore[attr-defined]


async def test_generated_bodies_over_http(web: Web, caplog: pytest.LogCaptureFixture,
                                          figures: dict[str, Any]) -> None:
    """Hypothesis draws the bodies; each is posted, signed, to the running handler."""
    caplog.set_level(logging.INFO)
    bodies: list[bytes] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(xmlish().map(str.encode), st.binary(max_size=500)))
    def collect(body: bytes) -> None:
        bodies.append(body)

    collect()
    statuses: dict[int, int] = {}
    wrong: list[tuple[bytes, int]] = []
    tracebacks = 0
    for body in bodies:
        status, answer = await _post(_signed_url(web), body)
        if status not in (200, 400, 403, 413):
            wrong.append((body[:80], status))
        tracebacks += b"Traceback" in answer
        statuses[status] = statuses.get(status, 0) + 1
    errors = _errors(caplog)
    figures.update({"generated_bodies": len(bodies), "crashes": len(errors) + tracebacks,
                    "http_5xx": sum(n for status, n in statuses.items() if status >= 500),
                    "answers": {str(k): v for k, v in sorted(statuses.items())}})
    assert wrong == []
    assert tracebacks == 0
    assert errors == []


async def test_simulated_push_with_hostile_text_is_answered(sim: Simulator) -> None:
    """A well-formed push whose text is hostile is a normal message: a 200 and a reply."""
    for text in ["]]></Content><MsgType>event</MsgType>", "<![CDATA[", "&lol;", "\u202e\u200b"]:
        push = sim.prepare(OPENID, text)
        delivery = await sim.post(PreparedPush(push.url, push.body))
        assert delivery.status == 200
        assert delivery.text
