"""The fake web WeChat as a process of its own: ``python -m sandbox.webwx --port N``.

It prints ``FAKE_WEBWX_BASE=http://127.0.0.1:N`` once it listens and runs until SIGINT or
SIGTERM.  ``--accounts K`` creates ``user0`` … ``userK-1`` up front (the benchmarks log
them in by push login with ``--auto-confirm-push``), each with ``--friends``, ``--groups``
and ``--members`` (per group, default 200).
"""

from __future__ import annotations

import argparse
import asyncio

from sandbox.serving import serve_until_signalled
from sandbox.webwx.protocol import FakeWebWx


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeWebWx(hold_login=args.hold_login, hold_sync=args.hold_sync,
                     qr_ttl=args.qr_ttl, auto_confirm_push=args.auto_confirm_push)
    for i in range(args.accounts):
        fake.add_account(f"user{i}", friends=args.friends, groups=args.groups,
                         members=args.members)
    await serve_until_signalled(lambda: fake.start(args.port, args.host), fake.stop,
                                "FAKE_WEBWX_BASE")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.webwx",
                                     description="Fake web WeChat for itchat.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--hold-login", type=float, default=25.0,
                        help="seconds a login long-poll is held (real: about 25)")
    parser.add_argument("--hold-sync", type=float, default=25.0,
                        help="seconds a synccheck long-poll is held (real: about 25)")
    parser.add_argument("--qr-ttl", type=float, default=300.0)
    parser.add_argument("--auto-confirm-push", action="store_true")
    parser.add_argument("--accounts", type=int, default=0,
                        help="create user0 … userN-1 up front")
    parser.add_argument("--friends", type=int, default=5)
    parser.add_argument("--groups", type=int, default=2)
    # Members are generated from the account and group index when a member list is asked
    # for (FakeAccount.group_dict), so 5,000 accounts of 20 groups of 200 cost the fake
    # nothing until a group speaks.
    parser.add_argument("--members", type=int, default=200,
                        help="members of each group besides the owner (real groups: "
                             "often a few hundred, at most 500)")
    asyncio.run(_serve(parser.parse_args(argv)))
