"""What the account answers when a message is not a command: greetings, typos, voice,
pictures, menu buttons, pasted articles.  Pure (no I/O), tested alone.

Every answer says what the account can do and what to send next; none repeats more
than a short clip of what the user sent, and a menu key is never echoed (it is the
account owner's configuration, not something the user typed).
"""

from __future__ import annotations

import unicodedata

from mpbot.table import Args, CommandTable, fold

# The first steps, for people who do not know the account yet.
INTRO = ("你好！我是微信回复助手：帮你的个人微信自动回复好友。\n"
         "1. 添加规则：添加 苹果 梨子（好友发「苹果」时自动回「梨子」）\n"
         "2. 发送「登录」，扫码登录你要自动回复的微信\n"
         "发送「帮助」查看全部命令。")
SHORT_HELP = "常用命令：列表、添加 <关键词> <回复>、登录、状态。发送「帮助」查看全部命令。"
CAN_DO = ("我只看得懂文字命令：发送「添加 关键词 回复」设置自动回复，"
          "「登录」让你的微信开始自动回复，「帮助」查看全部命令。")
UNKNOWN_MENU = "这个菜单按钮暂时没有对应的功能。\n" + SHORT_HELP
SCAN_RECEIVED = "已收到扫码结果。这个按钮暂时没有别的功能。\n" + SHORT_HELP
VOICE_WITHOUT_RECOGNITION = ("收到语音，但我听不懂语音：请打字发送命令，例如「帮助」。\n"
                             "（公众号开启“语音识别”后，也可以直接说命令。）")
# Switches are never guessed from one changed character: "关注" is not a typo of "关闭",
# and a wrong guess there turns something off.
_NEVER_GUESSED = frozenset({"关闭", "开启", "退出"})
# Longer than any command needs to be shown in a hint: a pasted article.
LONG_TEXT_CHARS = 100

_RECEIVED = {
    "image": "收到图片。",
    "voice": "收到语音。",
    "video": "收到视频。",
    "shortvideo": "收到小视频。",
    "location": "收到位置。",
    "link": "收到链接。",
    "file": "收到文件。",
}

_GREETINGS = frozenset({
    "你好", "您好", "你好呀", "你好啊", "哈喽", "哈啰", "嗨", "在吗", "在不在", "早",
    "早上好", "上午好", "中午好", "下午好", "晚上好", "hi", "hello", "hey", "hallo",
    "nihao", "hi there", "hello there",
})
# What people put after a greeting or at the end of a spoken sentence.
_TRAILING = "!！。.~～?？,，、 \u3000…😊🙂👋"


def received(msg_type: str) -> str:
    """The answer to a message that is not text (or voice without recognition)."""
    return _RECEIVED.get(msg_type, "收到消息。") + CAN_DO


def voice_text(recognition: str) -> str:
    """A speech recognition result as a command: WeChat writes a sentence ("列表。",
    "添加，苹果，梨子。"), so the final punctuation goes and the pauses become spaces."""
    text = recognition.strip().rstrip(_TRAILING)
    for pause in "，,、":
        text = text.replace(pause, " ")
    return text


def is_greeting(text: str) -> bool:
    return fold(text.strip().rstrip(_TRAILING)) in _GREETINGS


def _clip(text: str, limit: int = 20) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _one_edit(a: str, b: str, *, indels: bool = True) -> bool:
    """True if ``a`` becomes ``b`` by one substituted character (帮主 → 帮助) or, for
    longer words, one swapped pair (hlep → help) or, with ``indels``, one inserted or
    deleted character (lst → list)."""
    if a == b:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
                and a[diff[1]] == b[diff[0]] and len(a) >= 3)
    if not indels or abs(len(a) - len(b)) != 1 or min(len(a), len(b)) < 2:
        return False
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def suggestion(text: str, table: CommandTable) -> str | None:
    """The command the user probably meant (the whole message as it should be sent),
    or None.  Only a single, unambiguous candidate is suggested."""
    parts = text.split(None, 1)
    if not parts:
        return None
    head, rest = parts[0], (parts[1] if len(parts) > 1 else "")
    folded = fold(head)
    candidates: set[str] = set()
    for command in table:
        if command.name in _NEVER_GUESSED:
            continue
        for name in command.names:
            # Short English aliases ("on", "ls") are one letter away from everyday
            # words ("ok", "is"): only longer names are guessed.
            # A Chinese word one character longer is another word ("添加剂"), not a typo.
            if len(name) >= (3 if name.isascii() else 2) and _one_edit(
                    folded, fold(name), indels=name.isascii()):
                candidates.add(command.name)
    if len(candidates) == 1:
        (name,) = candidates
        return f"{name} {rest}".strip()
    # "添加苹果 梨子": a command glued to its first argument.
    for command in table:
        if command.args is Args.RULE and text.startswith(command.name):
            glued = text[len(command.name):]
            if glued and not glued[0].isspace() and len(glued.split()) >= 2:
                return f"{command.name} {glued}"
    return None


def not_a_command(text: str, table: CommandTable) -> str:
    """The answer to text that names no command: never silence, never a bare "?"."""
    text = text.strip()
    if not text:
        return table.help_text()
    if is_greeting(text):
        return INTRO
    if len(text) > LONG_TEXT_CHARS:
        return (f"这段文字有 {len(text)} 个字，不是命令。"
                "要让好友发某个词时自动回复一段话，发送：添加 关键词 回复。\n"
                "发送「帮助」查看全部命令。")
    # Control and format characters (a zero-width space) are kept out of the clip.
    shown = "".join(ch for ch in _clip(text) if unicodedata.category(ch) not in ("Cc", "Cf"))
    guess = suggestion(text, table)
    if guess is not None:
        return f"没看懂“{shown}”。你是想发「{_clip(guess, 40)}」吗？"
    return f"没看懂“{shown}”。发送「帮助」查看全部命令，例如：添加 苹果 梨子"
