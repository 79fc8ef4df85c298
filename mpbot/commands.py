"""The chat commands of the official account (docs/OFFICIAL_ACCOUNT.md, 'Commands'): one
small function each.

A command takes ``(ctx, args)`` and returns the reply text; it never builds XML nor calls
WeChat.  Domain errors (a duplicate keyword, a missing rule) become replies here, with
the right form shown; ``StoreUnavailable`` is left to the edge, which answers "busy".
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from mpbot.context import Ctx
from mpbot.notifier import retry_time
from mpbot.parse import Parsed
from mpbot.table import Args, CommandTable, Reply
from store import (
    DuplicateKeyword,
    InvalidRule,
    MatchMode,
    Rule,
    RuleLimitReached,
    RuleNotFound,
    Stores,
)
from store.bots import CHINA, ONLINE, BotStatus, LoginGuarded, LoginInProgress
from store.kv import ANY_STAMP

TABLE = CommandTable()
PAGE_SIZE = 10
PREVIEW_CHARS = 24
# Continuation lines of a multi-line reply in 列表 and confirmations (two full-width
# spaces: WeChat keeps them, and they line up under the rule's number).
LIST_INDENT = "\u3000\u3000"
CODE_TTL_MS = 5 * 60 * 1000

STATE_NAMES = {
    "none": "未登录（发送「登录」获取二维码）",
    "requested": "正在生成二维码",
    "waiting_scan": "等待扫码",
    "scanned": "已扫码，等待在手机上确认",
    "online": "在线",
    "logged_out": "已退出（发送「登录」重新登录）",
    "refused": "微信拒绝了网页登录（发送「登录」重试）",
    "expired": "二维码已过期（发送「登录」重新获取）",
    "closed": "微信关闭了网页登录（请隔一段时间再「登录」）",
}
LOGIN_UNREACHABLE = "暂时连不上微信的登录服务，正在重试（稍后发送「状态」查看）"


def _preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


def _reply_preview(text: str, limit: int) -> str:
    """A reply as the friend will see it: its line breaks kept (blank lines and runs of
    spaces squeezed), continuation lines indented under the rule, cut at ``limit``."""
    # Only real line breaks: splitlines() would also break at U+000B, U+2028 and such.
    lines = [" ".join(line.split()) for line in text.replace("\r\n", "\n").split("\n")]
    shown = "\n".join(line for line in lines if line)
    if len(shown) > limit:
        shown = shown[:limit].rstrip() + "…"
    return shown.replace("\n", "\n" + LIST_INDENT)


def describe(rule: Rule, limit: int = 100) -> str:
    keyword = f"*{rule.keyword}（包含）" if rule.mode is MatchMode.CONTAINS else rule.keyword
    return f"{keyword} → {_reply_preview(rule.reply, limit)}"


def _usage(command_name: str) -> str:
    command = TABLE.lookup(command_name)
    assert command is not None
    return f"正确格式：{command.usage}\n例：{command.example}"


@TABLE.register("帮助", "help", "?", usage="帮助", help="查看全部命令", example="帮助")
async def show_help(ctx: Ctx, args: tuple[Any, ...]) -> Reply:
    return TABLE.help_text()


@TABLE.register("注册", "register", usage="注册", help="查看你的用户编号（关注时已自动注册）",
                example="注册")
async def register(ctx: Ctx, args: tuple[Any, ...]) -> Reply:
    user, created = await ctx.stores.users.get_or_create(ctx.openid)
    ctx.remember(user)
    if created:
        return f"注册成功！你的用户编号是 {user.uid}。\n发送「帮助」查看命令，例如：添加 苹果 梨子"
    # Following the account, or any command that needs an account, registers: 注册 is
    # never required (docs/OFFICIAL_ACCOUNT.md, "Your account").
    return f"你已经注册了（关注或第一次使用命令时自动完成），用户编号 {user.uid}。"


@TABLE.register("添加", "add", usage="添加 <关键词> <回复>", args=Args.RULE,
                help="添加规则（关键词前加 * 表示消息里包含它就回复）",
                example="添加 苹果 梨子")
async def add(ctx: Ctx, args: tuple[Any, ...]) -> Reply:
    keyword, reply, mode = args
    try:
        rule = await ctx.stores.rules.add(await ctx.uid(), keyword, reply, mode)
    except InvalidRule as err:
        return f"{err}\n{_usage('添加')}"
    except DuplicateKeyword as err:
        number = f"（编号 {err.number:02d}）" if err.number else ""
        hint = f"\n要改它的回复，发送：修改 {err.number:02d} 新回复" if err.number else ""
        return f"关键词“{_preview(keyword)}”已经有了{number}。{hint}"
    except RuleLimitReached as err:
        return f"规则已满（最多 {err.limit} 条）。先删除不用的：删除 <编号>"
    return f"已添加 {rule.label}：{describe(rule)}"


@TABLE.register("列表", "list", "ls", usage="列表 [页码]", args=Args.PAGE,
                help="查看你的规则（每页 10 条）", example="列表 2")
async def list_rules(ctx: Ctx, args: tuple[Any, ...]) -> Reply:
    (page,) = args
    # The hot path of the official account: no MongoDB here (cached id and rules).
    return rule_page(await ctx.stores.rules.snapshot(await ctx.uid(), ctx.stamp), page)


def rule_page(every: Sequence[Rule], page: int) -> Reply:
    """Page ``page`` of a user's rules (all of them, in number order)."""
    total = len(every)
    if total == 0:
        return "你还没有规则。添加一条试试：添加 苹果 梨子"
    pages = (total + PAGE_SIZE - 1) // PAGE_SIZE
    if page > pages:
        return f"只有 {pages} 页。发送「列表」从第 1 页看起。"
    rules = every[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]
    head = f"你的规则（共 {total} 条" + (f"，第 {page}/{pages} 页" if pages > 1 else "") + "）："
    lines = [head, *(f"{r.label} {describe(r, PREVIEW_CHARS)}" for r in rules)]
    if page < pages:
        lines.append(f"下一页：列表 {page + 1}")
    return "\n".join(lines)


def cached_answer(parsed: Parsed, uid: int | None,
                  stores: Stores) -> tuple[bytes | None, Reply] | None:
    """The answer to a read-only command from this process's caches alone (no I/O), and
    the version stamp the data it used was tagged with (:data:`store.kv.ANY_STAMP` when
    it used none); None when the caches cannot tell.

    The edge stores this answer as the push's reply only if the user's stamp is still
    that one, in the same round trip as its dedup claims: so ``列表``, the most frequent
    command, costs one Redis round trip and no MongoDB query.  Only commands without side
    effects may be answered this way: an answer that is not used is simply dropped."""
    handler = parsed.command.handler
    if handler is show_help:
        return ANY_STAMP, TABLE.help_text()
    if handler is list_rules and uid is not None:
        cached = stores.rules.snapshots.peek(uid)
        if cached is not None:
            (page,) = parsed.args
            return cached.version, rule_page(cached.value, page)
    return None


@TABLE.register("删除", "del", "delete", usage="删除 <编号>", args=Args.NUMBER,
                help="删除一条规则", example="删除 01")
async def delete(ctx: Ctx, args: tuple[Any, ...]) -> Reply:
    (number,) = args
    try:
        rule = await ctx.stores.rules.delete(await ctx.uid(), number)
    except RuleNotFound:
        return f"没有编号为 {number:02d} 的规则。发送「列表」查看你的规则。"
    return f"已删除 {rule.label}：{describe(rule)}"


@TABLE.register("修改", "edit", "update", usage="修改 <编号> <新回复>", args=Args.NUMBER_TEXT,
                help="修改一条规则的回复", example="修改 01 樱桃")
async def edit(ctx: Ctx, args: tuple[Any, ...]) -> Reply:
    number, reply = args
    user = await ctx.user()
    try:
        rule = await ctx.stores.rules.update(user.uid, number, reply=reply)
    except RuleNotFound:
        return f"没有编号为 {number:02d} 的规则。发送「列表」查看你的规则。"
    except InvalidRule as err:
        return f"{err}\n{_usage('修改')}"
    return f"已修改 {rule.label}：{describe(rule)}"


@TABLE.register("开启", "on", usage="开启", help="打开自动回复", example="开启")
async def turn_on(ctx: Ctx, args: tuple[Any, ...]) -> Reply:
    user = await ctx.user()
    ctx.remember(await ctx.stores.users.set_autoreply(user.uid, True))
    if ctx.bot is not None:
        await ctx.bot.rules_changed(user)
    return "自动回复已开启。"


@TABLE.register("关闭", "off", usage="关闭", help="暂停自动回复（规则保留）", example="关闭")
async def turn_off(ctx: Ctx, args: tuple[Any, ...]) -> Reply:
    user = await ctx.user()
    ctx.remember(await ctx.stores.users.set_autoreply(user.uid, False))
    if ctx.bot is not None:
        await ctx.bot.rules_changed(user)
    return "自动回复已关闭。发送「开启」恢复。"


@TABLE.register("登录", "login", "qr", usage="登录", example="登录",
                help="获取二维码，扫码后你的微信开始自动回复")
async def login(ctx: Ctx, args: tuple[Any, ...]) -> Reply:
    if ctx.bot is None:
        return "这台服务器没有启用个人微信机器人。"
    user = await ctx.user()
    try:
        ticket = await ctx.bot.login(user)
    except LoginInProgress:
        return "正在生成二维码，请几秒后再发送「登录」。"
    except LoginGuarded as held:
        why = ("微信刚刚关闭了你的网页版登录" if held.state == "closed"
               else "微信连续拒绝了这个账号的网页版登录")
        words = f"\n微信的提示：{held.wechat_message}" if held.wechat_message else ""
        return (f"暂不生成新的二维码：{why}。马上重新扫码，账号可能被微信限制登录。\n"
                f"请在 {retry_time(held.retry_after)}（北京时间）之后再发送「登录」。{words}")
    if ticket.state == ONLINE:
        named = f"「{ticket.nickname}」" if ticket.nickname else ""
        return f"你的微信{named}已经在线。要换一个微信号，先发送「退出」。"
    minutes = max(1, round(ctx.settings.qr_ttl / 60))
    return ("请用另一台设备（电脑或平板）打开下面的链接，再用要自动回复的微信扫码。"
            "手机微信不能扫描自己屏幕上的二维码。\n"
            f"{ticket.url}\n链接 {minutes} 分钟内有效。")


@TABLE.register("退出", "logout", usage="退出", example="退出",
                help="让你的微信退出登录，停止自动回复")
async def logout(ctx: Ctx, args: tuple[Any, ...]) -> Reply:
    if ctx.bot is None:
        return "这台服务器没有启用个人微信机器人。"
    user = await ctx.user()
    if await ctx.bot.logout(user):
        return "好的，正在退出登录，自动回复随后停止。"
    return "你的微信没有在线，不需要退出。"


# 状态: the reason of the latest event in plain words, and what to do next, per state.
REASON_WORDS = {
    "logout": "你发送了「退出」",
    "1100": "在手机上退出了网页版微信，或在别处登录了网页版",
    "1101": "在手机上退出了网页版微信，或在别处登录了网页版",
    "1102": "在手机上退出了网页版微信，或在别处登录了网页版",
    "1203": "微信不允许这个账号登录网页版（错误 1203）",
    "error": "和微信的连接断了，几次重连都没有成功",
    "unreachable": "连不上微信的登录服务（网络或微信那边的问题），正在重试",
}
STATE_WORDS = {"expired": "二维码在有效期内没有扫码确认"}
NEXT_STEPS = {
    "none": "发送「登录」获取二维码",
    "requested": "稍等几秒，用另一台设备打开登录链接扫码",
    "waiting_scan": "用另一台设备打开登录链接，用要自动回复的微信扫码（找不到链接就再发「登录」）",
    "scanned": "在手机微信上点「登录」确认",
    "online": "不需要操作；发送「退出」可以随时下线",
    "refused": "换一个注册较早、常用的微信号，再发送「登录」",
    "expired": "发送「登录」获取新的二维码",
}


def when(at: float, now: float) -> str:
    """A moment as the owner reads it (Beijing time): 今天 18:20, 12月3日 18:20."""
    moment = datetime.fromtimestamp(at, CHINA)
    today = datetime.fromtimestamp(now, CHINA).date()
    day = "今天" if moment.date() == today else f"{moment.month}月{moment.day}日"
    return f"{day} {moment:%H:%M}"


def _moment(at: float, now: float) -> str:
    ago = max(0, int(now - at))
    if ago < 60:
        rel = "刚刚"
    elif ago < 3600:
        rel = f"{ago // 60} 分钟前"
    elif ago < 86400:
        rel = f"{ago // 3600} 小时前"
    else:
        rel = f"{ago // 86400} 天前"
    return f"{when(at, now)}（{rel}）"


def status_lines(bot: BotStatus | None, now: float) -> list[str]:
    """The bot part of 状态: state, the latest event (reason in plain words, WeChat's own
    text if there is one), when, and the next step.  States and fields added later are
    shown generically."""
    state_code = bot.state if bot else "none"
    state = STATE_NAMES.get(state_code, state_code)
    if bot is not None and bot.state == "online" and bot.nickname:
        state = f"在线（{bot.nickname}）"
    if bot is not None and bot.state == "requested" and bot.reason == "unreachable":
        state = LOGIN_UNREACHABLE
    lines = [f"机器人：{state}"]
    if bot is not None and bot.since is not None:
        lines.append(f"最近变化：{_moment(bot.since.timestamp(), now)}")
    reason = (REASON_WORDS.get(bot.reason, f"微信返回 {bot.reason}") if bot and bot.reason
              else STATE_WORDS.get(state_code, ""))
    if reason and state_code != "online":
        lines.append(f"原因：{reason}")
    if bot is not None and bot.wechat_message:
        lines.append(f"微信的提示：「{_preview(bot.wechat_message, 200)}」")
    step = NEXT_STEPS.get(state_code, "发送「登录」重新登录")
    if bot is not None and bot.retry_after is not None and bot.retry_after > now:
        step = f"{when(bot.retry_after, now)} 以后再发送「登录」"
    lines.append(f"下一步：{step}")
    return lines


@TABLE.register("状态", "status", usage="状态", help="查看机器人和自动回复的状态",
                example="状态")
async def status(ctx: Ctx, args: tuple[Any, ...]) -> Reply:
    # Pending notices ride on this reply like on any other (mpbot.mailbox).
    user = await ctx.user()
    bot = await ctx.bot.status(user) if ctx.bot is not None else None
    return "\n".join([
        f"用户编号：{user.uid}",
        *status_lines(bot, ctx.now()),
        f"自动回复：{'开启' if user.autoreply else '关闭'}",
        f"规则：{user.rule_count} 条",
        f"今日已回复：{bot.replies_today if bot else 0} 次",
    ])


@TABLE.register("验证码", "code", usage="验证码",
                help="获取开通 API 账号（/account/register）用的一次性验证码（5 分钟）",
                example="验证码")
async def register_code(ctx: Ctx, args: tuple[Any, ...]) -> Reply:
    user = await ctx.user()
    if user.has_account:
        return f"你已绑定 API 账号「{user.username}」。忘记密码请发送「重置密码」。"
    code = await ctx.stores.kv.issue_code("register", ctx.openid, CODE_TTL_MS)
    # The user id is part of what must be typed: a code only works for its own user, so
    # a guess must match both (see docs/RELIABILITY.md, security).
    shown = f"{user.uid}-{code}"
    return (f"注册验证码：{shown}（5 分钟内有效，只能用一次）。\n"
            "用它开通绑定这个微信的 API 账号：POST /account/register，"
            f"字段 username（用户名）、password（至少 8 位）、last_name={shown}。")


@TABLE.register("重置密码", "reset", usage="重置密码",
                help="获取重设 API 账号密码（/account/reset）用的一次性验证码",
                example="重置密码")
async def reset_code(ctx: Ctx, args: tuple[Any, ...]) -> Reply:
    user = await ctx.user()
    if not user.has_account:
        return "你还没有 API 账号。先发送「验证码」获取注册验证码。"
    code = await ctx.stores.kv.issue_code("reset", str(user.uid), CODE_TTL_MS)
    return (f"重置密码验证码：{code}（5 分钟内有效，只能用一次）。\n"
            f"用它重设 API 账号「{user.username}」的密码：POST /account/reset，"
            f"字段 username={user.username}、code={code}、password（新密码，至少 8 位）。"
            "重设后所有已登录的会话都会退出，登录锁定也会解除。")
