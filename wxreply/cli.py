"""The ``wxreply`` command."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence

from config import ConfigError, Settings, ensure_secret_key, load_settings
from config.logs import JsonFormatter
from config.settings import default_public_url
from store.embedded import EmbeddedError


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings()
    overrides = {k: v for k, v in {"host": getattr(args, "host", None),
                                   "port": getattr(args, "port", None),
                                   "metrics_port": getattr(args, "metrics_port", None),
                                   }.items() if v is not None}
    if not overrides:
        return settings
    if "host" not in overrides and "port" not in overrides:
        return dataclasses.replace(settings, **overrides)
    if settings.public_url == default_public_url(settings.host, settings.port):
        # Derived, not configured: follow --host/--port too.
        overrides["public_url"] = default_public_url(overrides.get("host", settings.host),
                                                     overrides.get("port", settings.port))
    return dataclasses.replace(settings, **overrides)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wxreply", description="微信回复助手 wxreply")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the web app (and, by default, a bot worker)")
    serve.add_argument("--host", help="override WXR_HOST")
    serve.add_argument("--port", type=int, help="override WXR_PORT")
    serve.add_argument("--no-worker", action="store_true",
                       help="web tier only; bot sessions run in `wxreply worker` processes")
    worker = sub.add_parser("worker", help="run a standalone bot worker (needs real stores)")
    worker.add_argument("--capacity", type=int, help="override WXR_WORKER_CAPACITY")
    worker.add_argument("--metrics-port", type=int,
                        help="serve /metrics on this port (override WXR_METRICS_PORT)")
    status = sub.add_parser("status", help="workers, their sessions and load")
    from wxreply import status as status_cmd

    status_cmd.add_arguments(status)
    chat = sub.add_parser("chat", help="send a message to a running wxreply as WeChat would")
    from wxreply import chat as chat_cmd

    chat_cmd.add_arguments(chat)
    menu = sub.add_parser("menu", help="install the official account's default menu "
                                       "(帮助/列表/状态/登录) through the WeChat API")
    from wxreply import menu as menu_cmd

    menu_cmd.add_arguments(menu)
    return parser


def _setup_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    # Even at DEBUG, the drivers stay at INFO: pymongo's command log prints whole
    # documents (openids, password hashes), redis-py's prints commands with their values.
    for noisy in ("pymongo", "redis"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLevelName(level)))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
        _setup_logging(settings.log_level, settings.log_format)
        if args.command == "serve":
            from config.exposure import refuse_default_secrets
            from store.embedded import PRIVATE_UMASK

            # On the effective host, port and public URL (after --host/--port).
            refuse_default_secrets(settings)
            from wxreply.serve import StartupError, run_serve

            os.umask(PRIVATE_UMASK)  # before the data dir and secret_key are made
            try:
                run_serve(ensure_secret_key(settings), with_worker=not args.no_worker)
            except StartupError as exc:
                print(f"wxreply: {exc}", file=sys.stderr)
                return 1
        elif args.command == "worker":
            from wxreply.serve import StartupError, run_worker

            if args.capacity is not None and not 1 <= args.capacity <= 100_000:
                print("wxreply: --capacity must be 1-100000", file=sys.stderr)
                return 2
            if not 0 <= settings.metrics_port <= 65535:
                print("wxreply: --metrics-port must be 0-65535", file=sys.stderr)
                return 2
            try:
                run_worker(settings, args.capacity)
            except StartupError as exc:
                print(f"wxreply: {exc}", file=sys.stderr)
                return 1
        elif args.command == "status":
            import asyncio

            from wxreply import status

            return asyncio.run(status.run(settings, args))
        elif args.command == "chat":
            from wxreply import chat

            return chat.main(settings, args)
        elif args.command == "menu":
            import asyncio

            from wxreply import menu

            return asyncio.run(menu.run(settings, args))
    except ConfigError as exc:
        print(f"wxreply: config error: {exc}", file=sys.stderr)
        return 2
    except EmbeddedError as exc:
        print(f"wxreply: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
