"""``wxreply serve``: embedded stores (if needed), the web app, and a worker."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import logging
import os
import resource
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

from tornado.httpserver import HTTPServer

from config import Settings
from config.logs import log_request
from config.metrics import PROCESS, Metrics
from mpbot.notifier import Notifier
from replybot.worker import Worker
from store import Stores
from store.embedded import (
    PRIVATE_UMASK,
    EmbeddedMongo,
    EmbeddedRedis,
    EmbeddedServer,
    private_dir,
    write_private,
)
from store.models import RuleLimits
from wxreply.app import build_app, build_bot_service, build_mpapi
from wxreply.listener import build_http_server, raise_open_file_limit

log = logging.getLogger("wxreply")


class StartupError(RuntimeError):
    """Start-up cannot go on; the message is the one line shown to the operator."""


class DataDirLock:
    """An exclusive lock on ``WXR_DATA_DIR`` while embedded stores use it: two servers
    writing one WiredTiger home or one append-only file would corrupt it.

    The embedded servers inherit the lock's file descriptor, so the lock lasts until the
    last of them has exited.  After a ``kill -9`` of wxreply its servers are still
    shutting down (the kernel sent them SIGTERM) for a moment: a new ``serve`` waits for
    them instead of opening their data under their feet.  If the holder is alive, it is
    another running wxreply, and we stop at once.
    """

    WAIT_FOR_ORPHANS_S = 30.0

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "wxreply.lock"
        self._fh: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    @property
    def fileno(self) -> int:
        assert self._fh is not None
        return self._fh.fileno()

    def acquire(self) -> None:
        private_dir(self.path.parent)
        fh = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "a+")
        deadline = time.monotonic() + self.WAIT_FOR_ORPHANS_S
        told = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "?"
                if _alive(holder) or time.monotonic() > deadline:
                    fh.close()
                    raise StartupError(
                        f"WXR_DATA_DIR={self.path.parent} is in use by another wxreply "
                        f"(pid {holder}); stop it, or give this one another WXR_DATA_DIR"
                    ) from None
                if not told:
                    log.info("waiting for the stores of a stopped wxreply (pid %s) to exit",
                             holder)
                    told = True
                time.sleep(0.2)
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


def _alive(pid_text: str) -> bool:
    """Whether a process with this pid runs (and is not a zombie)."""
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid_text}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


RUNTIME_FILE = "stores.json"


def runtime_urls(settings: Settings) -> tuple[str, str]:
    """The store URLs a running ``serve`` uses: the configured ones, else those of its
    embedded servers (written to ``WXR_DATA_DIR/stores.json`` while it runs)."""
    if settings.mongo_url and settings.redis_url:
        return settings.mongo_url, settings.redis_url
    path = settings.data_dir / RUNTIME_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise StartupError(f"no running wxreply serve found ({path} missing); "
                           "set WXR_MONGO_URL and WXR_REDIS_URL") from None
    return settings.mongo_url or data["mongo_url"], settings.redis_url or data["redis_url"]


class EmbeddedStores:
    """Starts whichever stores have no URL configured; stops them in reverse order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.servers: list[EmbeddedServer] = []
        self.lock = DataDirLock(settings.data_dir)

    def start(self) -> tuple[str, str]:
        s = self.settings
        # Codes, sessions and password hashes live under here: no other local account
        # may enter it (a data dir made by an older wxreply was 0755).
        private_dir(s.data_dir)
        if s.embedded_redis or s.embedded_mongo:
            self.lock.acquire()
        try:
            keep = (self.lock.fileno,) if self.lock.held else ()
            redis_url = s.redis_url or self._start(EmbeddedRedis(s.data_dir / "redis",
                                                                 keep_fds=keep))
            mongo_url = s.mongo_url or self._start(EmbeddedMongo(s.data_dir / "mongo",
                                                                 keep_fds=keep))
        except BaseException:
            self.stop()
            raise
        if self.servers:
            # So that `wxreply status` (and other tools) can find the embedded servers.
            # The URLs carry the stores' passwords: 0600, like the password files.
            write_private(s.data_dir / RUNTIME_FILE,
                          json.dumps({"mongo_url": mongo_url, "redis_url": redis_url}))
        return mongo_url, redis_url

    def _start(self, server: EmbeddedServer) -> str:
        # The address only: server.url carries the password.
        log.info("starting embedded %s on %s", server.name, server.address)
        server.start()
        self.servers.append(server)
        return server.url

    async def supervise(self, stop: asyncio.Event, every_s: float = 0.5) -> None:
        """Restart an embedded server that died (a crash, an OOM kill, a stray kill -9) on
        the same port and data dir: the clients reconnect by themselves, and journaled
        writes survive (append-only file, WiredTiger log synced on commit)."""
        loop = asyncio.get_running_loop()
        delay = every_s
        while not stop.is_set():
            for server in self.servers:
                if server.running or stop.is_set():
                    continue
                code = server.process.returncode if server.process else None
                log.error("embedded %s exited (code %s); restarting it", server.name, code)
                try:
                    server.spawn()  # on the loop's thread, which lives as long as we do
                    await loop.run_in_executor(None, server.wait_ready)
                    log.info("embedded %s is back on 127.0.0.1:%d", server.name, server.port)
                    delay = every_s
                except Exception as exc:  # keep trying, more slowly
                    log.error("embedded %s did not restart: %s", server.name, exc)
                    delay = min(delay * 2, 10.0)
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass

    def stop(self) -> None:
        if self.servers:
            (self.settings.data_dir / RUNTIME_FILE).unlink(missing_ok=True)
        while self.servers:
            server = self.servers.pop()
            log.info("stopping embedded %s", server.name)
            server.stop()
        self.lock.release()


def open_stores(settings: Settings, mongo_url: str, redis_url: str) -> Stores:
    limits = RuleLimits(settings.keyword_max, settings.reply_max, settings.rules_max)
    return Stores.connect(mongo_url, redis_url, db_name=settings.mongo_db,
                          prefix=settings.redis_prefix, limits=limits)


def build_worker(settings: Settings, stores: Stores, **kwargs: Any) -> Worker:
    """A bot worker on the itchat driver ``WXR_BOT_DRIVER`` names, aimed at
    ``WXR_WECHAT_LOGIN_BASE``."""
    # itchat writes a block character to stdout when imported (to see whether the
    # terminal can show its QR codes): not a log line, and it broke WXR_LOG_FORMAT=json.
    with contextlib.redirect_stdout(io.StringIO()):
        from replybot.webwx.library import ItchatUnsupported, check_itchat, configure_itchat

    try:
        check_itchat()
    except ItchatUnsupported as exc:
        raise StartupError(str(exc)) from None
    # Only now: the driver's modules import itchat's internals the check has just found.
    from replybot.webwx.aio import AsyncItchatDriver
    from replybot.webwx.driver import ItchatDriver

    configure_itchat(settings.wechat_login_base, extspam=settings.wechat_uos_extspam)
    # WXR_BOT_DRIVER: a thread per session, or sessions on the event loop.
    driver = AsyncItchatDriver if settings.bot_driver == "async" else ItchatDriver
    return Worker(stores, settings, driver, **kwargs)


async def prepare_stores(settings: Settings, mongo_url: str, redis_url: str) -> Stores:
    stores = open_stores(settings, mongo_url, redis_url)
    try:
        await stores.ensure_indexes()
    except Exception as exc:
        await stores.close()
        raise StartupError(f"cannot prepare the stores at start-up: {exc}") from exc
    return stores


async def serve_async(settings: Settings, mongo_url: str, redis_url: str,
                      stop: asyncio.Event, *, with_worker: bool = True,
                      embedded: EmbeddedStores | None = None) -> None:
    stores = await prepare_stores(settings, mongo_url, redis_url)
    tasks: list[asyncio.Task[None]] = []
    if embedded is not None:
        tasks.append(asyncio.ensure_future(embedded.supervise(stop)))
    try:
        worker = build_worker(settings, stores) if with_worker else None
        mpapi = build_mpapi(settings, stores)
        bots = build_bot_service(settings, stores)
        app = build_app(settings, stores, bot=bots, mpapi=mpapi, health_extra=bots.dump)
        server = build_http_server(app)
        try:
            server.listen(settings.port, settings.host)
        except OSError as exc:
            raise StartupError(
                f"WXR_PORT: cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
            ) from None
        notifier = Notifier(stores, mpapi, settings.public_url,
                            consumer=f"web-{socket.gethostname()}-{os.getpid()}",
                            account_kind=settings.mp_account_kind)
        tasks.append(asyncio.ensure_future(notifier.run(stop)))
        if worker is not None:
            tasks.append(asyncio.ensure_future(worker.run(stop)))
        log.info("wxreply listening on http://%s:%d (%s mode, %s)", settings.host, settings.port,
                 "safe" if settings.safe_mode else "plaintext",
                 f"worker {worker.id}" if worker else "no worker")
        await stop.wait()
        log.info("shutting down")
        server.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.close_all_connections(), 5)
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for task in tasks:
            task.cancel()
        await stores.close()


def serve_metrics(settings: Settings, metrics: Metrics = PROCESS) -> HTTPServer:
    """A worker's own ``/metrics`` on ``WXR_HOST:WXR_METRICS_PORT``, protected as the web
    process's is (loopback, or ``WXR_HEALTH_TOKEN``)."""
    import tornado.web

    from web_min.health import metrics_routes

    app = tornado.web.Application(
        metrics_routes(metrics, settings.health_token, settings.trust_proxy),
        log_function=log_request)
    server = HTTPServer(app, idle_connection_timeout=60)
    try:
        server.listen(settings.metrics_port, settings.host)
    except OSError as exc:
        raise StartupError(f"WXR_METRICS_PORT: cannot listen on {settings.host}:"
                           f"{settings.metrics_port}: {exc.strerror}") from None
    log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
    return server


async def worker_async(settings: Settings, stop: asyncio.Event, capacity: int | None) -> None:
    if settings.mongo_url is None or settings.redis_url is None:
        raise StartupError("wxreply worker needs WXR_MONGO_URL and WXR_REDIS_URL "
                           "(the same servers the web processes use)")
    stores = await prepare_stores(settings, settings.mongo_url, settings.redis_url)
    server = None
    try:
        worker = build_worker(settings, stores, capacity=capacity)
        if settings.metrics_port:
            server = serve_metrics(settings)
        log.info("worker %s starting (capacity %d)", worker.id, worker.capacity)
        await worker.run(stop)
    finally:
        if server is not None:
            server.stop()
        await stores.close()


def _run_until_signal(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())


def run_worker(settings: Settings, capacity: int | None) -> None:
    _run_until_signal(lambda stop: worker_async(settings, stop, capacity))


def run_serve(settings: Settings, *, with_worker: bool = True) -> None:
    # Everything serve and its children write (stores' files, logs, stores.json) is for
    # this account only.
    os.umask(PRIVATE_UMASK)
    # Every connection is a file descriptor: the usual soft limit of 1,024 is far below
    # what the hard limit allows.
    soft, hard = raise_open_file_limit()
    log.info("open-file limit %d (hard %s)", soft,
             "unlimited" if hard == resource.RLIM_INFINITY else hard)
    embedded = EmbeddedStores(settings)
    # Until the loop runs, SIGTERM must still unwind through ``finally`` below.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        mongo_url, redis_url = embedded.start()
        _run_until_signal(lambda stop: serve_async(settings, mongo_url, redis_url, stop,
                                                   with_worker=with_worker, embedded=embedded))
    except KeyboardInterrupt:
        pass
    finally:
        embedded.stop()


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
