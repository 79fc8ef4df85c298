"""``wxreply chat``: talk to a running wxreply as WeChat's servers would.

Signs (and in safe mode encrypts) each push with the configured token, AES key and AppID,
posts it to ``/wechat``, checks and decrypts the reply and prints its text.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from config import Settings
from mpbot.simulator import DEFAULT_OPENID, Simulator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="*", help="the message, e.g. 添加 苹果 梨子")
    parser.add_argument("--url", help="the /wechat URL (default: from WXR_HOST/WXR_PORT)")
    parser.add_argument("--openid", default=DEFAULT_OPENID, help="who is talking")
    parser.add_argument("--event", choices=["subscribe", "unsubscribe", "SCAN", "CLICK",
                                            "scancode_waitmsg", "VIEW"],
                        help="send an event instead of text (follow, menu button …)")
    parser.add_argument("--key", help="the event's EventKey: a menu key (CLICK list), a QR "
                                      "scene (subscribe qrscene_42, SCAN 42)")
    parser.add_argument("--voice", action="store_true",
                        help="send the text as a voice message with WeChat's speech "
                             "recognition result (Recognition)")
    parser.add_argument("--times", type=int, default=1, metavar="N",
                        help="deliver the same push N times at once, as WeChat's retries can")


def default_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host  # noqa: S104
    return f"http://{host}:{settings.port}/wechat"


async def run(settings: Settings, args: argparse.Namespace) -> int:
    if not args.text and not args.event:
        print("wxreply chat: say something, e.g.  wxreply chat 帮助", file=sys.stderr)
        return 2
    if not 1 <= args.times <= 100:
        print("wxreply chat: --times must be 1-100", file=sys.stderr)
        return 2
    sim = Simulator(args.url or default_url(settings), settings.mp_token, settings.mp_aes_key,
                    settings.mp_appid)
    text = " ".join(args.text)
    if args.voice:
        push = sim.prepare(args.openid, "", msg_type="voice", extra={"Recognition": text})
    else:
        push = sim.prepare(args.openid, text, event=args.event, event_key=args.key)
    try:
        deliveries = await sim.send_times(push, args.times)
    except OSError as exc:
        print(f"wxreply chat: cannot reach {sim.url}: {exc}", file=sys.stderr)
        return 1
    failed = [d for d in deliveries if d.status != 200]
    for delivery in failed:
        print(f"wxreply chat: HTTP {delivery.status}: {delivery.raw.decode(errors='replace')}",
              file=sys.stderr)
    answered = [d for d in deliveries if d.status == 200]
    if answered:
        print(answered[0].text if answered[0].text else "(no reply)")
    if args.times > 1:
        same = len({d.text for d in answered}) <= 1
        slowest = max(d.elapsed for d in deliveries)
        print(f"-- {len(answered)}/{args.times} answered, replies "
              f"{'identical' if same else 'DIFFERENT'}, slowest {slowest * 1000:.0f} ms",
              file=sys.stderr)
        if not same:
            return 1
    return 1 if failed else 0


def main(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(run(settings, args))
