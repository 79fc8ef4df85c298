"""``wxreply serve``: embedded stores (if needed), the web app, and a worker."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from pathlib import Path
from typing import IO

import tornado.httpserver

from config import Settings
from store import Stores
from store.embedded import EmbeddedMongo, EmbeddedRedis, EmbeddedServer
from store.models import RuleLimits
from wxreply.app import build_app

log = logging.getLogger("wxreply")


class StartupError(RuntimeError):
    """Start-up cannot go on; the message is the one line shown to the operator."""


class DataDirLock:
    """An exclusive lock on ``WXR_DATA_DIR`` while embedded stores use it: two servers
    writing one WiredTiger home or one append-only file would corrupt it."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "wxreply.lock"
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise StartupError(
                f"WXR_DATA_DIR={self.path.parent} is in use by another wxreply (pid {holder}); "
                "stop it, or give this one another WXR_DATA_DIR"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


class EmbeddedStores:
    """Starts whichever stores have no URL configured; stops them in reverse order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.servers: list[EmbeddedServer] = []
        self.lock = DataDirLock(settings.data_dir)

    def start(self) -> tuple[str, str]:
        s = self.settings
        if s.embedded_redis or s.embedded_mongo:
            self.lock.acquire()
        try:
            redis_url = s.redis_url or self._start(EmbeddedRedis(s.data_dir / "redis"))
            mongo_url = s.mongo_url or self._start(EmbeddedMongo(s.data_dir / "mongo"))
        except BaseException:
            self.stop()
            raise
        return mongo_url, redis_url

    def _start(self, server: EmbeddedServer) -> str:
        log.info("starting embedded %s on 127.0.0.1:%d", server.name, server.port)
        server.start()
        self.servers.append(server)
        return server.url

    def stop(self) -> None:
        while self.servers:
            server = self.servers.pop()
            log.info("stopping embedded %s", server.name)
            server.stop()
        self.lock.release()


def open_stores(settings: Settings, mongo_url: str, redis_url: str) -> Stores:
    limits = RuleLimits(settings.keyword_max, settings.reply_max, settings.rules_max)
    return Stores.connect(mongo_url, redis_url, db_name=settings.mongo_db,
                          prefix=settings.redis_prefix, limits=limits)


async def serve_async(settings: Settings, mongo_url: str, redis_url: str,
                      stop: asyncio.Event) -> None:
    stores = open_stores(settings, mongo_url, redis_url)
    try:
        try:
            await stores.ensure_indexes()
        except Exception as exc:
            raise StartupError(f"cannot prepare MongoDB at start-up: {exc}") from exc
        app = build_app(settings, stores)
        server = tornado.httpserver.HTTPServer(app, xheaders=True, max_body_size=1 << 20)
        try:
            server.listen(settings.port, settings.host)
        except OSError as exc:
            raise StartupError(
                f"WXR_PORT: cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
            ) from None
        log.info("wxreply listening on http://%s:%d (%s mode)", settings.host, settings.port,
                 "safe" if settings.safe_mode else "plaintext")
        await stop.wait()
        log.info("shutting down")
        server.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.close_all_connections(), 5)
    finally:
        await stores.close()


def run_serve(settings: Settings) -> None:
    embedded = EmbeddedStores(settings)
    # Until the loop runs, SIGTERM must still unwind through ``finally`` below.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        mongo_url, redis_url = embedded.start()

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await serve_async(settings, mongo_url, redis_url, stop)

        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        embedded.stop()


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
