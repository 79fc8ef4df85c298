"""The two reference servers of the official-account benchmark, each run as a process.

* ``bare``: a bare Tornado handler doing only what any safe-mode official account must:
  verify the query signature and ``msg_signature``, decrypt, parse and answer (echo the
  text), encrypt the answer — all with wechatpy.  No store, no dedup, no replay check:
  the floor under any real implementation.
* ``werobot``: WeRoBot (the best-known Python framework for official accounts) behind its
  own Tornado adapter (``werobot.contrib.tornado.make_handler``), answering the same echo,
  as it ships: its default session storage keeps each user's session in SQLite (a file
  in the working directory), read and written on every message.
* ``werobot-nosession``: the same with ``SESSION_STORAGE=False``, WeRoBot's fastest
  configuration, so that the comparison also shows the request path alone.

``python -m bench.oa_servers KIND --port N --token T --aes-key K --appid A``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import tornado.web
from tornado.httpserver import HTTPServer


def bare_app(token: str, aes_key: str, appid: str) -> tornado.web.Application:
    from wechatpy import parse_message
    from wechatpy.crypto import WeChatCrypto
    from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
    from wechatpy.replies import TextReply
    from wechatpy.utils import check_signature

    crypto = WeChatCrypto(token, aes_key, appid)

    class BareHandler(tornado.web.RequestHandler):
        def post(self) -> None:
            arg = self.get_query_argument
            timestamp, nonce = arg("timestamp", ""), arg("nonce", "")
            try:
                check_signature(token, arg("signature", ""), timestamp, nonce)
                xml = crypto.decrypt_message(self.request.body, arg("msg_signature", ""),
                                             timestamp, nonce)
            except (InvalidSignatureException, InvalidAppIdException):
                raise tornado.web.HTTPError(403) from None
            message = parse_message(xml)
            reply = TextReply(content=getattr(message, "content", ""), message=message)
            self.set_header("Content-Type", "application/xml; charset=utf-8")
            self.finish(crypto.encrypt_message(reply.render(), nonce, timestamp))

    return tornado.web.Application([(r"/wechat", BareHandler)])


def werobot_app(token: str, aes_key: str, appid: str, *,
                sessions: bool = True) -> tornado.web.Application:
    from werobot import WeRoBot
    from werobot.contrib.tornado import make_handler

    options = {} if sessions else {"SESSION_STORAGE": False}
    robot = WeRoBot(token=token, encoding_aes_key=aes_key, app_id=appid, **options)

    @robot.text
    def echo(message: object) -> str:
        return str(getattr(message, "content", ""))

    return tornado.web.Application([(r"/wechat", make_handler(robot))])


async def _serve(app: tornado.web.Application, port: int) -> None:
    server = HTTPServer(app)
    server.listen(port, "127.0.0.1")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.oa_servers")
    parser.add_argument("kind", choices=("bare", "werobot", "werobot-nosession"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--aes-key", required=True)
    parser.add_argument("--appid", required=True)
    args = parser.parse_args(argv)
    if args.kind == "bare":
        app = bare_app(args.token, args.aes_key, args.appid)
    else:
        app = werobot_app(args.token, args.aes_key, args.appid,
                          sessions=args.kind == "werobot")
    asyncio.run(_serve(app, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
