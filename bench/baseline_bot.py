"""The bot-density baseline: one Python process per account.

This is how the original project and chatgpt-on-wechat run a personal-account bot: a
process of its own per WeChat account, itchat's own ``login()`` and ``run()`` loop, and a
``msg_register`` handlers whose return value itchat sends as the reply: friends' texts,
and group texts that @-mention the owner (itchat's ``IsAt``), the mention taken off.  Nothing of
wxreply is imported, so the process costs what such a deployment costs.

It logs in by push login (the fake confirms at once with ``--auto-confirm-push``), the
same way the worker's sessions do in the benchmark, and prints ``ONLINE`` when it is.

``python -m bench.baseline_bot --base URL --uin UIN --keyword K --reply R``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline_bot")
    parser.add_argument("--base", required=True, help="the fake web WeChat's base URL")
    parser.add_argument("--uin", required=True)
    parser.add_argument("--keyword", required=True)
    parser.add_argument("--reply", required=True)
    args = parser.parse_args(argv)

    import itchat
    import itchat.config
    from itchat.content import TEXT

    itchat.config.BASE_URL = args.base.rstrip("/")
    core = itchat.Core()
    # A returning user: the wxuin cookie is what makes itchat try push login first.
    core.s.cookies.set("wxuin", str(args.uin))
    rules = {args.keyword: args.reply}

    @core.msg_register(TEXT)
    def answer(msg: Any) -> str | None:
        return rules.get(msg.text)

    @core.msg_register(TEXT, isGroupChat=True)
    def answer_group(msg: Any) -> str | None:
        if not msg.get("IsAt"):
            return None
        # "@name\u2005text" as WeChat writes a mention: the text is after the space.
        return rules.get(str(msg.text).rsplit("\u2005", 1)[-1].strip())

    def online() -> None:
        print("ONLINE", flush=True)

    core.login(qrCallback=lambda **_: None, loginCallback=online)
    core.run(debug=False, blockThread=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
