"""Bot events → customer-service messages to the owner (DESIGN §1.4).

Workers publish what happens to a session on the bus; every web process runs a notifier
in the consumer group ``notifier``, so each event is read by one of them and told to the
user once.  An event is acknowledged once told, or once telling it is hopeless (WeChat's
48-hour window is over, the user unfollowed, no AppID configured).  If WeChat or Redis is
briefly unavailable it stays pending and is claimed again later, up to ``MAX_AGE_S``.
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
from mpbot.mpapi import MpApi, MpApiAuthFailed, MpApiDisabled, MpApiError, MpApiFinal
from store import Stores, StoreUnavailable, UserNotFound
from store.bots import CHINA
from store.bus import Message

log = logging.getLogger("wxreply.notifier")

READ_BLOCK_MS = 1000
RETRY_IDLE_MS = 15_000
MAX_AGE_S = 600.0  # a notice older than this is stale news


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


class Notifier:
    def __init__(self, stores: Stores, mpapi: MpApi, public_url: str, *, consumer: str,
                 now: Callable[[], float] = wall_clock) -> None:
        self.stores = stores
        self.mpapi = mpapi
        self.public_url = public_url.rstrip("/")
        self.consumer = consumer
        self.now = now
        self.sent = 0

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

    async def handle(self, message: Message) -> None:
        event = message.fields
        text = message_for(event, self.public_url)
        # Stream ids start with the entry's creation time in milliseconds.
        age = self.now() - int(message.id.split("-")[0]) / 1000
        if text is None or age > MAX_AGE_S:
            await self.stores.bus.ack_event(message.id)
            return
        try:
            user = await self.stores.users.get(int(event["uid"]))
        except (UserNotFound, KeyError, ValueError):
            await self.stores.bus.ack_event(message.id)
            return
        try:
            await self.mpapi.send_text(user.openid, text)
            self.sent += 1
        except MpApiDisabled:
            log.info("notice for %s not sent: no official-account credentials configured",
                     mask(user.openid))
        except MpApiFinal as err:
            log.info("notice for %s not deliverable: %s", mask(user.openid), err)
        except MpApiAuthFailed as err:
            log.error("notice for %s dropped: check WXR_MP_APPID/WXR_MP_SECRET: %s",
                      mask(user.openid), err)
        except MpApiError as err:
            log.warning("notice for %s will be retried: %s", mask(user.openid), err)
            return  # left pending: claimed again after RETRY_IDLE_MS
        await self.stores.bus.ack_event(message.id)
