"""Bot events → notices to the owner: a customer-service message when WeChat allows one,
else the owner's mailbox, which the passive reply to their next push carries
(:mod:`mpbot.mailbox`; docs/OFFICIAL_ACCOUNT.md).

Workers publish what happens to a session on the bus; every web process runs a notifier
in the consumer group ``notifier``, so each event is read by one of them and handled
once.  Where a notice goes:

* **mailbox, without calling WeChat**: the account is a subscription account
  (``WXR_MP_ACCOUNT_KIND``), no AppID/AppSecret is configured, WeChat said 48001 (no
  customer-service permission: every unverified subscription account) within the last
  ``CAPABILITY_RECHECK_S``, the user's 48-hour window is closed, or the quota of that
  window is nearly used (:class:`store.mailbox.Window`);
* **customer-service message** otherwise; if WeChat refuses it (48001, 45015, 45047, a
  rejected AppSecret, any other errcode) it goes to the mailbox instead; if WeChat or the
  network fails it stays pending on the bus and is tried again for ``SEND_RETRY_S``,
  then goes to the mailbox.

An event is acknowledged once it was sent, kept, or found not worth telling.  A state
event also makes a pending older state notice obsolete (it collapses to the newest).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from config.clock import wall_clock
from config.logs import mask
from config.metrics import PROCESS, Metrics
from mpbot.mpapi import (
    MpApi,
    MpApiAuthFailed,
    MpApiDisabled,
    MpApiError,
    MpApiFinal,
    MpApiUnavailable,
)
from store import Stores, StoreUnavailable, UserNotFound
from store.bots import CHINA
from store.bus import Message
from store.mailbox import MAILBOX_TTL_MS, Window, slot_for

log = logging.getLogger("wxreply.notifier")

READ_BLOCK_MS = 1000
RETRY_IDLE_MS = 15_000
# A customer-service message is tried again (every RETRY_IDLE_MS) while WeChat or the
# network fails, for this long; then the notice goes to the mailbox.
SEND_RETRY_S = 120.0
# An event older than this when first read (the notifiers were down) is not sent as a
# customer-service message: a burst of stale state changes collapses in the mailbox.
MAX_AGE_S = 600.0
# After a 48001, customer-service messages are not tried for this long (one process
# then checks again with the next notice).
CAPABILITY_RECHECK_S = 6 * 3600
NO_PERMISSION = 48001
_PROBE_MS = 60_000
_REMEMBER_DENIAL_MS = 30 * 24 * 3600 * 1000


def retry_time(retry_after: Any) -> str:
    """``retry_after`` (epoch seconds) as Beijing time, how owners read a clock."""
    try:
        moment = datetime.fromtimestamp(float(retry_after), CHINA)
    except (TypeError, ValueError, OverflowError, OSError):
        return ""
    return f"{moment:%m-%d %H:%M}"


def _wechat_words(event: dict[str, Any]) -> str:
    words = str(event.get("wechat_message") or "").strip()
    return f"\n微信的提示：{words}" if words else ""


def _guard_words(event: dict[str, Any]) -> str:
    when = retry_time(event.get("retry_after")) if event.get("retry_after") else ""
    return f"在 {when}（北京时间）之前「登录」会被暂缓。" if when else ""


def message_for(event: dict[str, Any], public_url: str) -> str | None:
    """The text for one bot event, or None if the owner need not hear about it."""
    kind = event.get("type")
    if kind == "send_failures":
        return ("提醒：最近几条自动回复没有发送成功，你的朋友可能没有收到。"
                "如果持续出现，发送「退出」后重新「登录」。")
    if kind == "loop_guard":
        return (f"提醒：和「{event.get('contact', '某位联系人')}」的对话里自动回复已连续触发多次，"
                "可能是对方也在自动回复。已暂停对这位联系人的自动回复 10 分钟。")
    if kind == "restricted":
        when = retry_time(event.get("retry_after")) if event.get("retry_after") else ""
        until = f"，{when}（北京时间）后恢复" if when else ""
        return (f"提醒：微信提示你的账号发送消息受限，自动回复已暂停{until}。"
                f"在此期间请少发消息，以免限制加重。{_wechat_words(event)}")
    if kind != "state":
        return None
    state = event.get("state")
    nickname = event.get("nickname") or ""
    resumed = event.get("origin") == "resume"
    named = f"「{nickname}」" if nickname else ""
    if state == "online":
        if resumed:
            return None  # a restart or failover the owner need not notice
        return (f"你的微信{named}已登录，自动回复开始工作。\n"
                "发送「状态」查看，发送「退出」随时下线。")
    if state == "scanned" and resumed and event.get("push"):
        return "自动回复需要重新确认登录：请在手机微信上点「登录」确认。"
    if state == "waiting_scan" and resumed:
        return ("自动回复的登录已失效，需要重新扫码。请用另一台设备打开：\n"
                f"{public_url}/qr/{event.get('pid', '')}")
    if state == "logged_out":
        reason = event.get("reason")
        if reason == "logout":
            return "已退出登录，自动回复已停止。发送「登录」可以重新开始。"
        if reason in ("1100", "1101"):
            return (f"你的微信{named}的网页版登录已结束：在手机上退出了网页版、"
                    "在别处登录了网页版，或被微信结束。自动回复已停止。"
                    "如果不是你自己操作的，请隔一段时间再发送「登录」。")
        return f"你的微信{named}已下线，自动回复已停止。发送「登录」重新登录。"
    if state == "closed":
        return (f"微信关闭了你的微信{named}的网页版登录（代码 {event.get('reason') or '1102'}），"
                "自动回复已停止。这不是你的操作，也不是本服务的故障：微信近来常在网页登录"
                "后几秒就关闭它。\n请不要马上重新扫码：短时间内反复登录网页版，"
                f"账号可能被微信限制登录一天或更久。{_guard_words(event)}"
                "之后可以再试一次；如果仍被关闭，说明这个账号现在不能使用网页版微信。")
    if state == "refused":
        ret = event.get("reason") or ""
        code = f"（错误 {ret}）" if ret else ""
        return (f"微信拒绝了这个账号的网页版登录{code}，自动回复无法启动。"
                f"{_wechat_words(event)}\n"
                "这是微信对账号的限制，不是二维码的问题：很多新注册或较少使用的账号"
                "不允许登录网页版微信。可以换一个注册较早、常用的微信号再试。"
                f"{_guard_words(event)}")
    if state == "expired":
        if resumed:
            return "自动回复没能恢复登录，已停止。发送「登录」重新扫码。"
        return "登录二维码已过期，自动回复没有启动。发送「登录」获取新的二维码。"
    return None


def notice_text(event: dict[str, Any], public_url: str,
                now: Callable[[], float] = wall_clock) -> str | None:
    """:func:`message_for`, plus WeChat's own words (``wechat_message``) and the end of a
    login guard (``retry_after``) when the event carries them and the text does not
    mention them already."""
    text = message_for(event, public_url)
    if text is None:
        return None
    words = event.get("wechat_message")
    if isinstance(words, str) and words.strip() and words.strip() not in text:
        text += f"\n微信的提示：「{words.strip()[:200]}」"
    retry_after = event.get("retry_after")
    if (isinstance(retry_after, int | float) and not isinstance(retry_after, bool)
            and retry_after > now()):
        from mpbot.commands import when  # commands imports nothing of the notifier

        moment = when(float(retry_after), now())
        if moment not in text and retry_time(retry_after) not in text:  # not said yet
            text += f"\n{moment} 以后可以再发送「登录」。"
    return text


class Notifier:
    def __init__(self, stores: Stores, mpapi: MpApi, public_url: str, *, consumer: str,
                 now: Callable[[], float] = wall_clock, account_kind: str = "auto",
                 metrics: Metrics = PROCESS) -> None:
        self.stores = stores
        self.metrics = metrics
        self.mpapi = mpapi
        self.public_url = public_url.rstrip("/")
        self.consumer = consumer
        self.now = now
        self.account_kind = account_kind
        self.sent = 0
        self.mailed = 0
        self._logged: set[str] = set()
        appid = mpapi.appid or "-"
        self._denied_key = f"mp:cap:{appid}:denied"          # 48001 seen, TTL = recheck
        self._was_denied_key = f"mp:cap:{appid}:was_denied"  # so the recheck is one probe
        self._probe_key = f"mp:cap:{appid}:probe"

    async def run(self, stop: asyncio.Event) -> None:
        last_claim = 0.0
        while not stop.is_set():
            try:
                batch = await self.stores.bus.read_events(self.consumer, READ_BLOCK_MS)
                if time.monotonic() - last_claim > RETRY_IDLE_MS / 1000:
                    last_claim = time.monotonic()
                    batch += await self.stores.bus.claim_stale_events(self.consumer,
                                                                      RETRY_IDLE_MS)
                for message in batch:
                    await self.handle(message)
            except StoreUnavailable as err:
                log.warning("notifier: bus unavailable: %s", err)
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("notifier: unexpected error")
                await asyncio.sleep(1)

    def _once(self, what: str, level: int, text: str, *args: object) -> None:
        """Log a line about the account (not a notice) once per process."""
        if what not in self._logged:
            self._logged.add(what)
            log.log(level, text, *args)

    async def handle(self, message: Message) -> None:
        event = message.fields
        text = notice_text(event, self.public_url, self.now)
        # Stream ids start with the entry's creation time in milliseconds.
        at = int(message.id.split("-")[0]) / 1000
        age = self.now() - at
        is_state = event.get("type") == "state"
        if (text is None and not is_state) or age > MAILBOX_TTL_MS / 1000:
            await self.stores.bus.ack_event(message.id)
            return
        try:
            user = await self.stores.users.get(int(event["uid"]))
        except (UserNotFound, KeyError, ValueError, TypeError):
            await self.stores.bus.ack_event(message.id)
            return
        if text is None:
            # A state nobody needs telling about (a resume went online, a new login began):
            # a pending notice of another state no longer matters.  One of the same state
            # still does (the owner never heard that the bot went online).
            await self._supersede(user.openid, str(event.get("state")), at)
        elif not await self.deliver(user.openid, event, text, at, age, message.id):
            return  # left pending: claimed again after RETRY_IDLE_MS
        await self.stores.bus.ack_event(message.id)

    async def deliver(self, openid: str, event: dict[str, Any], text: str, at: float,
                      age: float, entry_id: str) -> bool:
        """Send or keep one notice; False to try again later."""
        window = Window(known=False, open=False)
        reason = await self._why_not_send(age)
        if reason is None:
            window = await self.stores.mailbox.window(openid)
            if window.known and not window.open:
                reason = "the user's 48-hour window is closed"
            elif window.open and await self.stores.mailbox.count_send(openid,
                                                                      window) > window.usable:
                reason = (f"{window.usable} customer-service messages sent in this window "
                          f"(WeChat allows {window.allowance})")
        if reason is None:
            try:
                await self.mpapi.send_text(openid, text)
            except MpApiFinal as err:
                if err.errcode in (40003, 43004):
                    log.info("notice for %s not deliverable: %s", mask(openid), err)
                    self._count("customer_service", "undeliverable")
                    return True  # unfollowed or unknown: nobody to tell
                if err.errcode == 45015:
                    await self.stores.mailbox.close_window(openid)
                elif window.open:
                    await self.stores.mailbox.exhaust(openid, window)
                reason = str(err)
            except MpApiDisabled as err:
                reason = str(err)
            except MpApiAuthFailed as err:
                self._once("auth", logging.ERROR, "notices cannot be sent: check "
                           "WXR_MP_APPID/WXR_MP_SECRET: %s", err)
                reason = str(err)
            except MpApiUnavailable as err:
                if age < SEND_RETRY_S:
                    log.warning("notice for %s will be retried: %s", mask(openid), err)
                    self._count("customer_service", "retry")
                    return False
                reason = f"{err}, for {SEND_RETRY_S:g} s"
            except MpApiError as err:
                if err.errcode == NO_PERMISSION:
                    await self._no_permission(err)
                reason = str(err)
            else:
                self.sent += 1
                self._count("customer_service", "sent")
                await self._permission_confirmed()
                if event.get("type") == "state":
                    await self.stores.mailbox.supersede(openid, "state", at)
                return True
            self._count("customer_service", "failed")  # WeChat refused it: mailbox
        await self.stores.mailbox.add(openid, slot_for(event, entry_id), at, event)
        self.mailed += 1
        self._count("mailbox", "kept")
        log.info("notice for %s kept for the next reply: %s", mask(openid), reason)
        return True

    def _count(self, channel: str, result: str) -> None:
        self.metrics.notices.labels(channel, result).inc()

    async def _supersede(self, openid: str, state: str, at: float) -> None:
        pending = [n for n in await self.stores.mailbox.peek(openid) if n.slot == "state"]
        if pending and pending[0].event.get("state") != state:
            await self.stores.mailbox.supersede(openid, "state", at)

    async def _why_not_send(self, age: float) -> str | None:
        """Why no customer-service message should be tried at all, or None."""
        if self.account_kind == "subscription":
            return "WXR_MP_ACCOUNT_KIND=subscription (no customer-service messages)"
        if not self.mpapi.enabled:
            self._once("disabled", logging.WARNING,
                       "no WXR_MP_APPID/WXR_MP_SECRET: notices wait in each owner's mailbox "
                       "and ride on the reply to their next message")
            return "no official-account credentials configured"
        if age > MAX_AGE_S:
            return f"the event is {age:.0f} s old"
        kv = self.stores.kv
        if await kv.get(self._denied_key) is not None:
            return "the account has no customer-service permission (errcode 48001)"
        if await kv.get(self._was_denied_key) is not None:
            # The denial lapsed: one notice (in one process) asks WeChat again.
            if not await kv.claim(self._probe_key, _PROBE_MS):
                return "the account's customer-service permission is being checked"
            log.info("checking again whether the official account may send "
                     "customer-service messages (it answered 48001 %d h ago)",
                     CAPABILITY_RECHECK_S // 3600)
        return None

    async def _no_permission(self, err: MpApiError) -> None:
        kv = self.stores.kv
        await kv.put(self._denied_key, str(int(self.now())), CAPABILITY_RECHECK_S * 1000)
        await kv.put(self._was_denied_key, "1", _REMEMBER_DENIAL_MS)
        configured = ("" if self.account_kind in ("auto", "subscription") else
                      f" (WXR_MP_ACCOUNT_KIND={self.account_kind} says it should)")
        self._once("48001", logging.WARNING,
                   "the official account may not send customer-service messages%s: %s. "
                   "Personal and other unverified subscription accounts lack this "
                   "permission. Notices now wait in each owner's mailbox and ride on the "
                   "reply to their next message; asking WeChat again in %d h. Set "
                   "WXR_MP_ACCOUNT_KIND=subscription to skip the check.",
                   configured, err, CAPABILITY_RECHECK_S // 3600)

    async def _permission_confirmed(self) -> None:
        kv = self.stores.kv
        if await kv.get(self._was_denied_key) is not None:
            await kv.delete(self._was_denied_key)
            log.info("the official account may send customer-service messages again")
