"""Any text a user can send gets a 200 and a valid reply, in each of WeChat's modes.

"Any text": every character XML 1.0 allows (WeChat sends XML, so nothing else can reach
us), any length up to 5,000 characters (4-byte emoji included: the push still fits the
64 KiB body in compatible mode, the largest of the three).  "Valid": a reply WeChat can
read (well-formed XML, sealed and signed in safe and compatible mode with a key), with
text, within 2,048 UTF-8 bytes, and without a character XML forbids.

Hypothesis draws the texts; each is delivered through the real edge (signature checks,
decryption, dedup in Redis, commands against MongoDB).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from config import Settings
from mpbot.edge import Edge
from mpbot.protocol import read_reply, xml_char_ok
from mpbot.simulator import Simulator
from store import Stores

MAX_TEXT_CHARS = 5000
MODES = ("plaintext", "compatible", "safe")

xml_chars = st.characters(codec="utf-8").filter(xml_char_ok)


@st.composite
def any_text(draw: st.DrawFn) -> str:
    """Short texts of any characters, or long ones: a drawn piece repeated to a drawn
    length (hypothesis alone rarely draws thousands of characters)."""
    if draw(st.booleans()):
        return draw(st.text(xml_chars, max_size=60))
    piece = draw(st.text(xml_chars, min_size=1, max_size=8))
    length = draw(st.integers(1, MAX_TEXT_CHARS))
    prefix = draw(st.sampled_from(["", "添加 k ", "列表 ", "帮助 ", "删除 "]))
    return prefix + (piece * (length // len(piece) + 1))[:length - len(prefix)]


async def test_any_text_in_any_mode_gets_a_valid_reply(
        stores: Stores, settings: Settings, safe_settings: Settings,
        figures: dict[str, Any]) -> None:
    cases: list[tuple[str, str]] = []

    @hsettings(max_examples=240, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(MODES), any_text())
    def collect(mode: str, text: str) -> None:
        cases.append((mode, text))

    collect()
    # And the longest, in each mode: 5,000 four-byte characters.
    cases.extend((mode, "😀" * MAX_TEXT_CHARS) for mode in MODES)
    edges = {"plaintext": Edge(settings, stores), "keyed": Edge(safe_settings, stores)}
    plain = Simulator("http://127.0.0.1/wechat", settings.mp_token)
    sealed = Simulator("http://127.0.0.1/wechat", safe_settings.mp_token,
                       safe_settings.mp_aes_key, safe_settings.mp_appid)
    longest = 0
    statuses: dict[int, int] = {}
    failures: list[tuple[str, str, str]] = []  # (mode, start of the text, what was wrong)
    for i, (mode, text) in enumerate(cases):
        sim = plain if mode == "plaintext" else sealed
        push = sim.prepare(f"o-any-text-{i % 7:015d}", text, compatible=mode == "compatible")
        query = {k: v[0] for k, v in
                 urllib.parse.parse_qs(urllib.parse.urlsplit(push.url).query).items()}
        answer = await edges["plaintext" if mode == "plaintext" else "keyed"].handle_post(
            query, push.body)
        statuses[answer.status] = statuses.get(answer.status, 0) + 1
        longest = max(longest, len(text))
        if answer.status != 200:
            failures.append((mode, text[:50], f"{answer.status} {answer.reason}"))
            continue
        body = answer.body if isinstance(answer.body, str) else answer.body.decode()
        envelope = sealed.envelope if mode != "plaintext" else None
        try:
            reply = read_reply(body, envelope, safe_settings.mp_token)
        except Exception as err:  # noqa: BLE001 - an unreadable reply is a finding
            failures.append((mode, text[:50], f"unreadable reply: {err}"))
            continue
        if not reply:
            failures.append((mode, text[:50], "empty reply"))
        elif len(reply.encode()) > 2048:
            failures.append((mode, text[:50], f"reply of {len(reply.encode())} bytes"))
        elif not all(xml_char_ok(ch) for ch in reply):
            failures.append((mode, text[:50], "a character XML forbids in the reply"))
    figures.update({"texts": len(cases), "longest_chars": longest,
                    "non_200": sum(n for status, n in statuses.items() if status != 200),
                    "invalid_replies": sum(not f[2][:3].isdigit() for f in failures)})
    assert failures == []
    assert longest == MAX_TEXT_CHARS
