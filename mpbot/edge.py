"""``/wechat``: verify → decrypt → replay check → dedup → command table → reply.

docs/OFFICIAL_ACCOUNT.md, 'What wxreply guarantees to WeChat', in code.  The handler is
thin; :class:`Edge` holds the logic and is what tests drive over HTTP.  Every outcome is
an answer WeChat accepts, within 4 s: a reply, the "busy" reply when a store is down, or
a 4xx for requests that are not from WeChat.  Never a 5xx, never a stack trace.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping

import tornado.web

from config import Settings
from config.clock import wall_clock
from config.logs import mask
from config.metrics import PROCESS, Metrics
from mpbot import commands, hints
from mpbot.context import BotControl, Ctx
from mpbot.mailbox import Postman, contact_mark
from mpbot.mpapi import MpApi, MpApiError
from mpbot.parse import NotACommand, ParseError, parse_command
from mpbot.protocol import (
    MAX_BODY_BYTES,
    Envelope,
    ProtocolError,
    Push,
    SignatureError,
    check_signature,
    new_nonce,
    parse_xml,
    render_text,
    strip_non_xml,
)
from mpbot.table import Command, CommandTable
from store import StoreError, Stores, StoreUnavailable
from store.bots import settings_version_key
from store.cache import Stamp
from store.mailbox import mail_key

log = logging.getLogger("wxreply.mpbot")

BUSY = "服务繁忙，请稍后再试"
# WeChat's three message modes, as a push shows them (see docs/OFFICIAL_ACCOUNT.md).
PLAINTEXT, COMPATIBLE, SAFE = "plaintext", "compatible", "safe"
# A QR scene string is at most 64 characters (WeChat's qrcode/create document).
MAX_SCENE_CHARS = 64
TIMESTAMP_WINDOW_S = 300
# WeChat gives up after 5 s; leave room for the network.
ANSWER_BUDGET_S = 4.0
# How long a push's first reply is kept for WeChat's retries (they come within ~15 s).
PUSH_TTL_MS = 15 * 60 * 1000
# A nonce is remembered a little longer than the timestamp window it can be valid in.
NONCE_TTL_MS = (2 * TIMESTAMP_WINDOW_S + 60) * 1000
_POLL_S = 0.02
# A sandbox account (测试号) offers only URL and Token: it always pushes plaintext.
SANDBOX_HINT = (" (a sandbox account, 测试号, can only push plaintext: leave WXR_MP_AES_KEY "
                "empty for it)")
_PENDING = b""
_DONE = b"="


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: str | bytes = ""
    reason: str = ""  # for the log; never shown to WeChat
    label: str = ""   # the refusal's metrics label (config.metrics.PUSH_REJECT_REASONS)


class _Unreadable(Exception):
    """A genuine safe-mode push (its msg_signature checks out) that this server cannot
    decrypt: no WXR_MP_AES_KEY.  Answered "success" (WeChat shows the user nothing)
    rather than an error page, and logged loudly."""


class Edge:
    def __init__(self, settings: Settings, stores: Stores, *, table: CommandTable = commands.TABLE,
                 bot: BotControl | None = None, mpapi: MpApi | None = None,
                 now: Callable[[], float] = wall_clock, metrics: Metrics = PROCESS) -> None:
        self.settings = settings
        self.metrics = metrics
        self.stores = stores
        self.table = table
        self.bot = bot
        self.mpapi = mpapi
        self.now = now
        self._background: set[asyncio.Task[None]] = set()
        # Pending notices ride on replies (mpbot.mailbox).
        self.postman = Postman(stores, bot, settings.public_url, now=now, metrics=metrics)
        self.envelope = (Envelope(settings.mp_token, settings.mp_aes_key, settings.mp_appid)
                         if settings.safe_mode else None)
        self.expected_mode = SAFE if settings.safe_mode else PLAINTEXT
        self.seen_mode: str | None = None  # the mode of the last push WeChat sent
        for command in [*table, None]:  # every label at 0 from the start
            metrics.commands.labels(command_label(command))

    def _note_mode(self, mode: str) -> None:
        """Log which mode WeChat uses, once per change: a mismatch with the server's
        configuration is how a half-done mode switch shows."""
        if mode == self.seen_mode:
            return
        self.seen_mode = mode
        key = "set" if self.envelope is not None else "not set"
        fits = (mode == PLAINTEXT) == (self.envelope is None)
        if fits:
            log.info("WeChat sends %s-mode pushes; this server expects %s mode "
                     "(WXR_MP_AES_KEY %s)", mode, self.expected_mode, key)
        elif mode == SAFE:
            log.error("WeChat sends safe-mode pushes but WXR_MP_AES_KEY is not set: they "
                      "cannot be read and are answered with nothing. Set WXR_MP_AES_KEY "
                      "(and WXR_MP_APPID) to the account's EncodingAESKey and restart")
        else:
            log.warning("WeChat sends %s-mode pushes; this server expects %s mode "
                        "(WXR_MP_AES_KEY %s). Accepted while the switch completes: the "
                        "signature is still checked; finish the switch in the official "
                        "account's console (or on this server)%s", mode, self.expected_mode,
                        key, SANDBOX_HINT if mode == PLAINTEXT else "")

    # -- request checks ------------------------------------------------------------

    def signed(self, query: Mapping[str, str]) -> bool:
        """The query-string signature and the timestamp window (GET and POST alike)."""
        sig, timestamp, nonce = (query.get(k, "") for k in ("signature", "timestamp", "nonce"))
        if not (sig and timestamp and nonce) or len(nonce) > 64 or len(timestamp) > 12:
            return False
        if not check_signature(self.settings.mp_token, sig, timestamp, nonce):
            return False
        if not timestamp.isdigit():
            return False
        return abs(int(timestamp) - self.now()) <= TIMESTAMP_WINDOW_S

    def _inner_xml(self, query: Mapping[str, str], body: str) -> tuple[str, bool]:
        """The push's XML, and whether the reply is to be sealed.

        What WeChat may send while an account switches modes is accepted, each checked
        as far as it can be: a plaintext push (query signature, as in plaintext mode) even
        with a key set; a compatible push (plaintext fields and ``<Encrypt>``) with or
        without a key, its ``msg_signature`` checked either way, the ciphertext used when
        we can decrypt it; a safe-mode push without a key is :class:`_Unreadable`."""
        if query.get("encrypt_type", "raw").lower() != "aes":
            self._note_mode(PLAINTEXT)
            return body, False
        outer = parse_xml(body)
        encrypted = outer.get("Encrypt")
        if not encrypted:
            raise ProtocolError("missing <Encrypt>")
        # The msg_signature covers the ciphertext and needs only the token: checked
        # before anything else, with or without a key.
        if not check_signature(self.settings.mp_token, query.get("msg_signature", ""),
                               query["timestamp"], query["nonce"], encrypted):
            raise SignatureError("bad msg_signature")
        compatible = "MsgType" in outer
        self._note_mode(COMPATIBLE if compatible else SAFE)
        if self.envelope is not None:
            return self.envelope.decrypt(encrypted), True
        if compatible:
            # Compatible mode: WeChat takes a plaintext reply too.
            return body, False
        raise _Unreadable

    # -- the whole POST --------------------------------------------------------------

    async def handle_post(self, query: Mapping[str, str], raw: bytes) -> Answer:
        started = time.monotonic()
        answer = await self._handle_post(query, raw, started)
        if answer.status != 200:
            self.metrics.pushes.labels("rejected", answer.label).inc()
        else:
            if answer.label != "unreadable":
                self.metrics.answer_seconds.observe(time.monotonic() - started)
            self.metrics.pushes.labels(answer.label if answer.label in ("busy", "reply")
                                       else "success", "").inc()
        return answer

    async def _handle_post(self, query: Mapping[str, str], raw: bytes,
                           started: float) -> Answer:
        if len(raw) > MAX_BODY_BYTES:
            return Answer(413, reason="body over 64 KiB", label="too_large")
        try:
            body = raw.decode("utf-8")
            inner, sealed = self._inner_xml(query, body)
            push = Push.from_fields(parse_xml(inner))
        except UnicodeDecodeError:
            return Answer(400, reason="body is not UTF-8", label="not_utf8")
        except _Unreadable:
            return Answer(200, "success", reason="safe-mode push without WXR_MP_AES_KEY",
                          label="unreadable")
        except SignatureError as err:
            return Answer(403, reason=str(err), label="signature")
        except ProtocolError as err:
            return Answer(400, reason=str(err), label="malformed")
        openid = query.get("openid")
        if openid is not None and openid != push.from_user:
            return Answer(403, reason="openid does not match FromUserName",
                          label="openid_mismatch")

        deadline = started + ANSWER_BUDGET_S
        try:
            # asyncio.timeout, not wait_for: no extra task per push.
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                text = await self._answer_once(push, query["nonce"], deadline)
        except _Replay:
            return Answer(403, reason="nonce replayed with another message", label="replay")
        except (StoreUnavailable, TimeoutError) as err:
            log.warning("busy reply to %s: %s", mask(push.from_user), err)
            text = BUSY
        except Exception:
            # A bug must still give WeChat a valid reply, never a 5xx or a stack trace.
            log.exception("unexpected error answering %s", mask(push.from_user))
            text = BUSY
        if not text:
            return Answer(200, "success")
        return Answer(200, self._render(push, text, query["nonce"], sealed),
                      label="busy" if text == BUSY else "reply")

    def _render(self, push: Push, text: str, nonce: str, sealed: bool = True) -> str:
        now = self.now()
        xml = render_text(push.from_user, push.to_user, text, now)
        if self.envelope is None or not sealed:
            return xml
        return self.envelope.seal(xml, nonce or new_nonce(), str(int(now)))

    # -- replay and exactly-once -----------------------------------------------------

    async def _answer_once(self, push: Push, nonce: str, deadline: float) -> str:
        kv = self.stores.kv
        key = push.dedup_key
        # A nonce may come back only with the same message (a WeChat retry); with any
        # other body it is a replayed signature.  Both claims take one round trip, and
        # so does the user's version stamp when we know the user: with it, a command
        # that reads cached rules needs no round trip of its own.
        uid = self.stores.uids.get(push.from_user)
        early = self._early(push, uid)
        claim = await kv.claim_guarded(
            f"nonce:{nonce}", key, NONCE_TTL_MS, f"push:{key}", _PENDING, PUSH_TTL_MS,
            read_also=settings_version_key(uid) if uid is not None else None,
            done_if=(early[0], _DONE + early[1].encode()) if early is not None else None,
            hold_if=mail_key(push.from_user), also_set=contact_mark(push, self.now()))
        if claim.refused:
            raise _Replay
        if claim.done:
            assert early is not None
            self._count_command(early_text(push))
            return early[1]  # stored as this push's reply in the same round trip
        stamp = Stamp(uid, claim.extra) if uid is not None else None
        claimed, state, held = claim.claimed, claim.current, claim.held
        while True:
            if claimed:
                return await self._first_attempt(push, key, stamp, held)
            if state is not None and state.startswith(_DONE):
                self.metrics.dedup_hits.inc()
                return state[len(_DONE):].decode()
            if state is not None:  # still running elsewhere: wait for its reply
                if time.monotonic() >= deadline - _POLL_S:
                    raise TimeoutError("first attempt still running")
                await asyncio.sleep(_POLL_S)
            # else the first attempt gave up (store error): this one may take over.
            claimed = await kv.claim(f"push:{key}", PUSH_TTL_MS, _PENDING)
            state = None if claimed else await kv.get(f"push:{key}")
            held = True  # not checked on this rare path: let the postman look

    def _early(self, push: Push, uid: int | None) -> tuple[bytes | None, str] | None:
        """The answer to a read-only command from this process's caches, computed before
        any I/O (see :func:`mpbot.commands.cached_answer`), with the stamp it needs."""
        text = early_text(push)
        if text is None:
            return None
        try:
            parsed = parse_command(text, self.table)
        except (NotACommand, ParseError):
            return None
        return commands.cached_answer(parsed, uid, self.stores)

    async def _first_attempt(self, push: Push, key: str, stamp: Stamp | None,
                             held: bool = False) -> str:
        kv = self.stores.kv
        try:
            text = await self.dispatch(push, stamp)
        except BaseException:
            # Nothing (or nothing acknowledged) happened: let WeChat's retry run it again.
            # The unique indexes make a half-done add safe to repeat.
            try:
                await asyncio.shield(kv.delete(f"push:{key}"))
            except (StoreError, asyncio.CancelledError):
                pass
            raise
        if held:  # the user has a mailbox: its notices are stored with this reply
            return await self.postman.finish(push, f"push:{key}", text, PUSH_TTL_MS, _DONE)
        await kv.put(f"push:{key}", _DONE + text.encode(), PUSH_TTL_MS)
        return text

    # -- what a push means -----------------------------------------------------------

    async def dispatch(self, push: Push, stamp: Stamp | None = None) -> str:
        ctx = Ctx(push.from_user, self.stores, self.settings, self.bot, self.now, stamp)
        if push.msg_type == "text":
            return await self.run_text(ctx, push.content)
        if push.msg_type == "voice" and push.recognition:
            # WeChat's speech recognition (when the account enabled it): a spoken command.
            return await self.run_text(ctx, hints.voice_text(push.recognition))
        if push.msg_type == "voice":
            return hints.VOICE_WITHOUT_RECOGNITION
        if push.msg_type == "event":
            return await self._event(ctx, push)
        return hints.received(push.msg_type)

    def _count_command(self, text: str | None) -> None:
        """One command run, by its label (from the table; anything else is "other")."""
        label = "other"
        if text is not None:
            try:
                label = command_label(parse_command(text, self.table).command)
            except (NotACommand, ParseError):
                pass
        self.metrics.commands.labels(label).inc()

    async def run_text(self, ctx: Ctx, text: str) -> str:
        try:
            parsed = parse_command(text, self.table)
        except NotACommand:
            self.metrics.commands.labels("other").inc()
            return hints.not_a_command(text, self.table)
        except ParseError as err:
            self.metrics.commands.labels(command_label(err.command)).inc()
            return err.reply
        self.metrics.commands.labels(command_label(parsed.command)).inc()
        return await parsed.command.handler(ctx, parsed.args)

    async def _menu(self, ctx: Ctx, key: str, otherwise: str) -> str:
        """A menu button whose key names a command ("帮助", "list" …) runs it; any other
        key gets ``otherwise`` (the key itself is never shown: it is configuration)."""
        try:
            parsed = parse_command(key, self.table)
        except (NotACommand, ParseError):
            return otherwise
        self.metrics.commands.labels(command_label(parsed.command)).inc()
        return await parsed.command.handler(ctx, parsed.args)

    async def _welcome(self, ctx: Ctx, scene: str | None) -> tuple[int, bool]:
        """Create or wake the user; record the QR scene they came through, if any."""
        user, created = await self.stores.users.get_or_create(ctx.openid)
        ctx.remember(user)
        if not created and not user.subscribed:
            await self.stores.users.set_subscribed(ctx.openid, True)
        if scene:
            await self.stores.users.set_scene(ctx.openid, scene)
        if self.mpapi is not None and self.mpapi.enabled and not user.nickname:
            # Off the reply's path: the user/info call may take seconds.
            task = asyncio.ensure_future(self._fetch_nickname(user.uid, ctx.openid))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return user.uid, created

    async def _event(self, ctx: Ctx, push: Push) -> str:
        if push.event == "subscribe":
            # Through a QR code with a scene, EventKey is "qrscene_<scene>".
            key = push.event_key
            scene = key[len("qrscene_"):] if key.startswith("qrscene_") else None
            uid, created = await self._welcome(ctx, _scene(scene))
            greeting = "欢迎回来" if not created else "欢迎关注微信回复助手"
            return f"{greeting}！你的用户编号是 {uid}。\n\n{self.table.help_text()}"
        if push.event == "scan":
            # A follower scanned a QR code with a scene (EventKey: the bare scene).
            uid, _ = await self._welcome(ctx, _scene(push.event_key))
            return f"欢迎回来！你的用户编号是 {uid}。\n{hints.SHORT_HELP}"
        if push.event == "unsubscribe":
            user = await self.stores.users.set_subscribed(ctx.openid, False)
            if user is not None and self.bot is not None:
                # They can no longer see notifications or control the bot from here.
                await self.bot.logout(user)
            return ""
        if push.event == "click":
            return await self._menu(ctx, push.event_key, hints.UNKNOWN_MENU)
        if push.event == "scancode_waitmsg":
            # The client shows "消息接收中" until a reply comes: always answer.
            return await self._menu(ctx, push.event_key, hints.SCAN_RECEIVED)
        # VIEW (a link opened), scancode_push (the client shows the result itself),
        # LOCATION reports, pic_*/location_select (the message itself follows): nothing
        # to say.
        return ""

    async def _fetch_nickname(self, uid: int, openid: str) -> None:
        assert self.mpapi is not None
        try:
            info = await self.mpapi.user_info(openid)
            if info and info.get("nickname"):
                await self.stores.users.set_profile(uid, nickname=str(info["nickname"])[:64])
        except (MpApiError, StoreError) as err:
            # WeChat no longer returns nicknames for most accounts; not worth more than a line.
            log.info("no nickname for %s: %s", mask(openid), err)


class _Replay(Exception):
    pass


def early_text(push: Push) -> str | None:
    """The text a push says, if it can be a command: a text, or recognised speech."""
    if push.msg_type == "text":
        return push.content
    if push.msg_type == "voice" and push.recognition:
        return hints.voice_text(push.recognition)
    return None


def command_label(command: Command | None) -> str:
    """A command's metrics label: its first English name (a fixed set: the table's
    commands); "other" for anything else."""
    if command is None:
        return "other"
    for alias in command.aliases:
        if alias.isascii() and alias.isalpha():
            return alias.lower()
    return "other"


def _scene(raw: str | None) -> str | None:
    """A QR scene as stored: without characters XML forbids, at most 64 characters."""
    if not raw:
        return None
    return strip_non_xml(raw)[:MAX_SCENE_CHARS] or None


# -- Tornado ---------------------------------------------------------------------------


class WechatHandler(tornado.web.RequestHandler):
    def initialize(self, edge: Edge) -> None:
        self.edge = edge
        self.query: dict[str, str] = {}

    def prepare(self) -> None:
        # Decoded once, for the check here and for the push.
        self.query = {k: self.get_query_argument(k) for k in self.request.query_arguments}
        # Checked before anything runs: a request that is not signed by WeChat (with our
        # token, within the time window) gets 403 and causes no side effect.
        if not self.edge.signed(self.query):
            if self.request.method == "POST":
                self.edge.metrics.pushes.labels("rejected", "signature").inc()
            raise tornado.web.HTTPError(403)

    def get(self) -> None:
        echo = self.request.query_arguments.get("echostr")
        if not echo:
            raise tornado.web.HTTPError(400)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        # The echo is attacker-chosen bytes (signed, but anyone with the token signs):
        # never let a browser sniff them into HTML.
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(echo[0])  # byte-exact, as WeChat compares it

    async def post(self) -> None:
        try:
            answer = await self.edge.handle_post(self.query, self.request.body)
        except Exception:
            # Never a 5xx nor a stack trace to WeChat.  (Errors after the push is parsed
            # are answered with the busy reply inside handle_post.)
            log.exception("unexpected error reading a push")
            answer = Answer(200, "success")
        if answer.status != 200:
            log.info("refused push: %s (%d)", answer.reason, answer.status)
            raise tornado.web.HTTPError(answer.status)
        self.set_header("Content-Type", "application/xml; charset=utf-8")
        self.finish(answer.body)

    def write_error(self, status_code: int, **kwargs: object) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(str(status_code))


def routes(edge: Edge) -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, object]]]:
    return [(r"/wechat/?", WechatHandler, {"edge": edge})]

