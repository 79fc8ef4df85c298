"""Request bodies in, JSON out: the API's only parser and encoder.

Pure functions, no Tornado.  The API accepts JSON and form bodies alike (the original
front end sent both).  Everything is read into an ordered list of ``(name, value)``
pairs, where a value is whatever JSON gave (str, int, list, nested pairs, None, …) or a
str from a form.  Handlers then ask for *strings*: anything else is :class:`BadInput`
(code -4), so a ``{"$ne": null}`` can never travel from a body into a query.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable

# Room for the largest legitimate body (a full batch of 200 rules of 30 + 600 CJK
# characters is about 380 KB of UTF-8) and below the server's 1 MiB cap, so that an
# oversized body gets a clear -4 here instead of a dropped connection there.
MAX_BODY_BYTES = 512 * 1024
# The CSRF token may travel in the body; it is never a keyword, a username or anything
# else a handler reads.
CSRF_FIELD = "csrf_token"

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class BadInput(ValueError):
    """The request cannot be read; ``str(err)`` is the message shown with code -4."""


class Pairs(list[tuple[str, object]]):
    """A JSON object as read: its members in order, duplicates kept (a plain dict would
    silently keep the last of two equal keys)."""


def _pairs_hook(members: list[tuple[str, object]]) -> Pairs:
    return Pairs(members)


def _reject_constant(name: str) -> object:
    raise BadInput(f"请求体不是合法的 JSON（不支持 {name}）")


def parse_json(raw: bytes) -> Pairs:
    """A JSON object body; :class:`BadInput` for anything else."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("请求体不是 UTF-8 编码") from None
    try:
        value = json.loads(text, object_pairs_hook=_pairs_hook, parse_constant=_reject_constant)
    except RecursionError:
        # Thousands of nested brackets: json recurses once per level.
        raise BadInput("请求体嵌套太深") from None
    except ValueError as err:  # JSONDecodeError, and int() refusing 5,000-digit numbers
        if isinstance(err, BadInput):
            raise
        raise BadInput("请求体不是合法的 JSON") from None
    if not isinstance(value, Pairs):
        raise BadInput("请求体必须是 JSON 对象，例如 {\"username\": \"…\"}")
    return value


def parse_urlencoded(raw: bytes) -> Pairs:
    # Parsed here rather than by Tornado: Tornado decodes names as Latin-1 and drops a
    # body it cannot parse with only a log line; here a bad body is a clear -4.
    try:
        text = raw.decode("ascii") if raw.isascii() else raw.decode("utf-8")
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=False,
                                       encoding="utf-8", errors="strict",
                                       max_num_fields=1000)
    except UnicodeDecodeError:
        raise BadInput("请求体不是 UTF-8 编码") from None
    except ValueError:
        raise BadInput("表单字段太多") from None
    return Pairs(pairs)


def parse_multipart(arguments: dict[str, list[bytes]], files: dict[str, object]) -> Pairs:
    """Tornado's parse of a multipart body, with the values decoded strictly."""
    if files:
        raise BadInput("不接受上传文件")
    out = Pairs()
    for name, values in arguments.items():
        for value in values:
            try:
                out.append((name, value.decode("utf-8")))
            except UnicodeDecodeError:
                raise BadInput(f"字段 {_shown(name)} 不是 UTF-8 编码") from None
    return out


def parse_body(content_type: str, raw: bytes, *, multipart_arguments: dict[str, list[bytes]]
               | None = None, multipart_files: dict[str, object] | None = None) -> Pairs:
    """The body as ordered pairs.  JSON when declared so, or when it looks like a JSON
    object (``urllib`` sends ``application/x-www-form-urlencoded`` by default even for a
    JSON body); otherwise a form."""
    if len(raw) > MAX_BODY_BYTES:
        raise BadInput(f"请求体太大（最多 {MAX_BODY_BYTES // 1024} KiB）")
    media = content_type.split(";", 1)[0].strip().lower()
    if not raw.strip():
        return Pairs()
    if media == "multipart/form-data":
        return parse_multipart(multipart_arguments or {}, multipart_files or {})
    if media == "application/json" or media.endswith("+json") or raw.lstrip()[:1] == b"{":
        return parse_json(raw)
    if media in ("", "application/x-www-form-urlencoded"):
        return parse_urlencoded(raw)
    raise BadInput(f"不支持的 Content-Type {_shown(media)}：请用 application/json 或表单")


def _shown(name: str, limit: int = 20) -> str:
    return name if len(name) <= limit else name[:limit] + "…"


def is_text(value: object) -> bool:
    """A str that can be stored: lone surrogates (``"\\ud800"`` is valid JSON) cannot be
    encoded as UTF-8 and would fail deep inside the database driver."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_field(pairs: Pairs, name: str) -> str:
    """The one string value of ``name``; :class:`BadInput` if missing, repeated or not a
    string (an object, array, number, boolean or null)."""
    values = [value for key, value in pairs if key == name]
    if not values:
        raise BadInput(f"缺少参数 {name}")
    if len(values) > 1:
        raise BadInput(f"参数 {name} 只能出现一次")
    (value,) = values
    if not is_text(value):
        raise BadInput(f"参数 {name} 必须是字符串")
    return value  # type: ignore[return-value]


def optional_text(pairs: Pairs, name: str) -> str | None:
    if not any(key == name for key, _ in pairs):
        return None
    return text_field(pairs, name)


def text_pairs(pairs: Iterable[tuple[str, object]], what: str = "回复") -> list[tuple[str, str]]:
    """All members except the CSRF token, each value a string."""
    out: list[tuple[str, str]] = []
    for key, value in pairs:
        if key == CSRF_FIELD:
            continue
        if not is_text(key):
            raise BadInput("关键词含有无法编码的字符")
        if not is_text(value):
            raise BadInput(f"“{_shown(key)}”的{what}必须是字符串")
        out.append((key, value))  # type: ignore[arg-type]
    return out


_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
            "\u2028": "\\u2028", "\u2029": "\\u2029"}


def encode_json(obj: object) -> bytes:
    """JSON that is safe even if something renders it as HTML or inlines it in a script:
    ``<``, ``>`` and ``&`` (only ever inside strings in JSON) become ``\\u003c`` etc., so
    a keyword ``<script>`` cannot become markup anywhere it is echoed."""
    text = json.dumps(obj, ensure_ascii=False)
    for char, escape in _ESCAPES.items():
        text = text.replace(char, escape)
    return text.encode("utf-8")
