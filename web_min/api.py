"""The original project's JSON API (docs/API.md), over the same store as the chat commands.

Every answer is ``{"code": …, "message": …}`` (plus data), with the original's codes:

====  ==================================================================
 200  ok
   0  unknown error, or a store is unreachable ("服务繁忙，请稍后再试")
  -1  one-time code invalid or used (not bound to the official account)
  -2  username taken, or duplicate keyword
  -3  wrong username or password; not logged in
  -4  bad parameters (wrong type, missing, too long, malformed body, …)
  -5  no such rule among the caller's own (another user's, or none)
====  ==================================================================

HTTP status is 200 except for authentication failures: 401 (not logged in), 403 (CSRF
token missing or wrong, or a cross-site request to a login form), 429 (locked out after
repeated failures, too many attempts, or the password hasher's queue is full; always with
``Retry-After``), and 405 for a method an endpoint does not have.  Never a 500: an
unexpected error is logged and answered with code 0.  Handlers are thin; they parse, call
``stores`` and the bot service, and render.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import tornado.web

from config import Settings
from config.clock import wall_clock
from store import (
    DuplicateKeyword,
    InvalidRule,
    MatchMode,
    Rule,
    RuleLimitReached,
    RuleNotFound,
    Stores,
    StoreUnavailable,
    User,
    UsernameTaken,
    UserNotFound,
)
from store.bots import BotStatus, LoginInProgress, QrTicket
from web_min import bodies
from web_min.accounts import (
    CODE_BY_IP,
    CODE_BY_TARGET,
    CODE_GLOBAL,
    CSRF_COOKIE,
    CSRF_HEADERS,
    DEFAULT_BCRYPT_ROUNDS,
    HASHER_RETRY_AFTER_S,
    LOGIN_BY_IP,
    LOGIN_BY_USERNAME,
    LOGIN_LOCKOUT_S,
    LOGIN_RATE_BY_IP,
    LOGIN_SLOW_INTERVAL_S,
    LOGIN_SOFT_BY_USERNAME,
    PASSWORD_MAX_BYTES,
    SESSION_COOKIE,
    SESSION_DAYS,
    HasherBusy,
    InvalidCredentialForm,
    Lockout,
    Passwords,
    Session,
    Sessions,
    check_password_form,
    csrf_matches,
    minutes,
    normalize_username,
)
from web_min.addresses import address_group, client_address
from web_min.bodies import BadInput, Pairs

log = logging.getLogger("wxreply.web")

OK = 200
UNKNOWN = 0
BAD_CODE = -1
TAKEN = -2
BAD_LOGIN = -3
BAD_PARAMS = -4
NOT_YOURS = -5

BUSY = "服务繁忙，请稍后再试"
RULE_NUMBER_MAX_DIGITS = 6
MAX_CODE_CHARS = 32
CODE_PURPOSE_REGISTER = "register"
CODE_PURPOSE_RESET = "reset"


class BotControl(Protocol):
    """The bot service as the API uses it (``store.bots.BotService``): declared here,
    not imported from ``mpbot``, because edges do not import each other."""

    async def login(self, user: User) -> QrTicket: ...
    async def status(self, user: User) -> BotStatus: ...
    async def rules_changed(self, user: User) -> None: ...


class ApiError(Exception):
    """An answer other than 200: its code, message and HTTP status."""

    def __init__(self, code: int, message: str, status: int = 200,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.headers = headers or {}


@dataclasses.dataclass(slots=True)
class Api:
    """What the handlers share: stores, the bot service and the account machinery."""

    settings: Settings
    stores: Stores
    bot: BotControl
    passwords: Passwords
    now: Callable[[], float] = wall_clock
    sessions: Sessions = dataclasses.field(init=False)
    lockout: Lockout = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.sessions = Sessions(self.stores.kv)
        self.lockout = Lockout(self.stores.kv, self.now)

    @property
    def secure_cookies(self) -> bool:
        # Behind https (WXR_PUBLIC_URL), cookies never travel over plain http.
        return self.settings.public_url.startswith("https")


def keyword_shown(rule: Rule) -> str:
    """The keyword as the chat commands write it: ``*价格`` for a "contains" rule."""
    return f"*{rule.keyword}" if rule.mode is MatchMode.CONTAINS else rule.keyword


def rules_data(rules: list[Rule]) -> dict[str, dict[str, str]]:
    """The original's shape: ``{"01": {"关键词": "回复"}, …}`` in number order."""
    return {rule.label: {keyword_shown(rule): rule.reply} for rule in rules}


def keyword_and_mode(raw: str) -> tuple[str, MatchMode]:
    """``*价格`` (or full-width ``＊``) is a "contains" rule, as in the chat's 添加."""
    if raw.startswith(("*", "＊")):
        return raw[1:], MatchMode.CONTAINS
    return raw, MatchMode.EXACT


def _preview(text: str, limit: int = 20) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


class ApiHandler(tornado.web.RequestHandler):
    """Base of every API endpoint: JSON answers, session, CSRF, and error mapping."""

    SUPPORTED_METHODS: tuple[str, ...] = ("GET",)
    login_required: ClassVar[bool] = True
    # Methods that change state and so need the CSRF token when cookie-authenticated.
    csrf_methods: ClassVar[frozenset[str]] = frozenset({"POST", "DELETE"})

    def initialize(self, api: Api) -> None:
        self.api = api
        self.stores = api.stores
        self.session: Session | None = None
        self._user: User | None = None
        self._pairs: Pairs | None = None

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")

    # -- one entry point for every method ---------------------------------------------

    async def get(self, *args: str) -> None:
        await self._run()

    async def post(self, *args: str) -> None:
        await self._run()

    async def delete(self, *args: str) -> None:
        await self._run()

    async def act(self) -> dict[str, Any]:
        """The endpoint's work; returns the fields added to ``code``/``message``."""
        raise NotImplementedError

    async def _run(self) -> None:
        try:
            if not self.login_required and self.request.method == "POST":
                self._refuse_cross_site()
            if self.login_required:
                await self._authenticate()
            if self.session is not None and self.request.method in self.csrf_methods:
                self._check_csrf()
            extra = await self.act()
        except ApiError as err:
            for name, value in err.headers.items():
                self.set_header(name, value)
            self.answer(err.code, err.message, status=err.status)
        except BadInput as err:
            self.answer(BAD_PARAMS, f"参数错误：{err}")
        except HasherBusy:
            log.warning("%s %s: password hasher busy", self.request.method, self.request.path)
            self.set_header("Retry-After", str(HASHER_RETRY_AFTER_S))
            self.answer(UNKNOWN, BUSY, status=429)
        except StoreUnavailable as err:
            log.warning("%s %s: busy: %s", self.request.method, self.request.path, err)
            self.answer(UNKNOWN, BUSY)
        except Exception:
            # A bug must still be a well-formed answer, never a 500 with a stack trace.
            log.exception("%s %s failed", self.request.method, self.request.path)
            self.answer(UNKNOWN, "未知错误")
        else:
            self.answer(OK, "ok", **extra)

    def answer(self, code: int, message: str, *, status: int = 200, **extra: Any) -> None:
        self.set_status(status)
        self.finish(bodies.encode_json({"code": code, "message": message, **extra}))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Reached only for what Tornado rejects before a method runs: still the API's
        # JSON shape.
        code = BAD_PARAMS
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.SUPPORTED_METHODS))
            message = f"不支持 {self.request.method}，请用 {' 或 '.join(self.SUPPORTED_METHODS)}"
        elif status_code == 400:
            # A form body Tornado could not parse (too many fields, a broken multipart):
            # bad parameters like any other, so HTTP 200 and -4 (docs/API.md).
            self.set_status(200)
            message = "参数错误：请求体无法解析"
        else:
            code = UNKNOWN
            message = "未知错误"
        self.finish(bodies.encode_json({"code": code, "message": message}))

    # -- input -------------------------------------------------------------------------

    def pairs(self) -> Pairs:
        """The body as ordered ``(name, value)`` pairs (JSON or form), parsed once."""
        if self._pairs is None:
            request = self.request
            self._pairs = bodies.parse_body(
                request.headers.get("Content-Type", ""), request.body,
                multipart_arguments=request.body_arguments,
                multipart_files=request.files)  # type: ignore[arg-type]
        return self._pairs

    def query_text(self, name: str) -> str | None:
        """One query parameter, decoded strictly; None if absent."""
        values = self.request.query_arguments.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise BadInput(f"参数 {name} 只能出现一次")
        try:
            return values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput(f"参数 {name} 不是 UTF-8 编码") from None

    def rule_number(self) -> int:
        """``?id=N`` (``01`` and ``1`` alike): a positive number of at most 6 digits."""
        raw = self.query_text("id")
        if raw is None:
            raise BadInput("缺少参数 id（规则编号，例如 ?id=01）")
        if not (raw.isascii() and raw.isdigit() and 0 < len(raw) <= RULE_NUMBER_MAX_DIGITS):
            raise BadInput("id 必须是规则编号，例如 01")
        number = int(raw)
        if number < 1:
            raise BadInput("id 必须是规则编号，例如 01")
        return number

    # -- session and CSRF --------------------------------------------------------------

    async def _authenticate(self) -> None:
        raw = self.get_signed_cookie(SESSION_COOKIE, max_age_days=SESSION_DAYS)
        session = await self.api.sessions.load(raw.decode()) if raw else None
        user = None
        if session is not None:
            try:
                user = await self.stores.users.get(session.uid)
            except UserNotFound:
                user = None
        if session is None or user is None:
            raise ApiError(BAD_LOGIN, "未登录或登录已过期，请先登录", status=401,
                           headers={"WWW-Authenticate": 'Cookie realm="wxreply"'})
        self.session = session
        self._user = user

    def _check_csrf(self) -> None:
        """The session's CSRF token must come back in a header, the body or the query.

        A cross-site page can make the browser send our cookie, but cannot read the
        token (it lives in the session and in a cookie only our origin can read).
        """
        assert self.session is not None
        given: str | None = None
        for header in CSRF_HEADERS:
            given = given or self.request.headers.get(header)
        if given is None:
            given = self.query_text(bodies.CSRF_FIELD)
        if given is None:
            try:
                given = bodies.optional_text(self.pairs(), bodies.CSRF_FIELD)
            except BadInput:
                given = None
        if not csrf_matches(self.session.csrf, given):
            raise ApiError(BAD_PARAMS, "CSRF 校验失败：请在 X-CSRF-Token 请求头或 csrf_token "
                           "参数里带上登录时得到的 csrf_token", status=403)

    @property
    def user(self) -> User:
        assert self._user is not None
        return self._user

    def set_session_cookies(self, session: Session) -> None:
        secure = self.api.secure_cookies
        self.set_signed_cookie(SESSION_COOKIE, session.token, expires_days=None,
                               max_age=SESSION_DAYS * 24 * 3600, httponly=True,
                               secure=secure, samesite="Lax", path="/")
        # Readable by our own pages' scripts (that is the point: they echo it back),
        # useless to other sites, which can neither read it nor set it for us.
        self.set_cookie(CSRF_COOKIE, session.csrf, max_age=SESSION_DAYS * 24 * 3600,
                        httponly=False, secure=secure, samesite="Lax", path="/")

    def clear_session_cookies(self) -> None:
        secure = self.api.secure_cookies
        for name, httponly in ((SESSION_COOKIE, True), (CSRF_COOKIE, False)):
            self.clear_cookie(name, path="/", httponly=httponly, secure=secure, samesite="Lax")

    def client_ip(self) -> str:
        return client_address(self.request, self.api.settings.trust_proxy)

    def client_group(self) -> str:
        """What per-address limits count: the address, or its IPv6 /64."""
        return address_group(self.client_ip())

    def _refuse_cross_site(self) -> None:
        """Login CSRF: a page elsewhere can POST a form (or ``text/plain`` that looks
        like JSON) to /account/login and log the visitor's browser into the attacker's
        account.  Browsers say where such a request comes from; clients that are not
        browsers send neither header and are not affected."""
        fetch_site = self.request.headers.get("Sec-Fetch-Site", "").lower()
        origin = self.request.headers.get("Origin")
        allowed = {_origin(self.api.settings.public_url),
                   f"{self.request.protocol}://{self.request.host}".lower()}
        if fetch_site == "cross-site" or (origin is not None
                                          and origin.strip().lower() not in allowed):
            raise ApiError(BAD_PARAMS, "跨站请求被拒绝：请从本站页面或 API 客户端提交",
                           status=403)


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}".lower()


# -- /account ---------------------------------------------------------------------------


def _credential(pairs: Pairs, name: str, check: Callable[[str], str]) -> str:
    value = bodies.text_field(pairs, name)
    try:
        return check(value)
    except InvalidCredentialForm as err:
        raise BadInput(str(err)) from None


class RegisterHandler(ApiHandler):
    """``POST /account/register``: username, password and ``last_name``: the code that
    the official account's 验证码 command gave, with the user id it shows
    (``1001-483920``); it names the WeChat user the new account is bound to."""

    SUPPORTED_METHODS = ("POST",)
    login_required = False

    async def act(self) -> dict[str, Any]:
        pairs = self.pairs()
        username = _credential(pairs, "username", normalize_username)
        password = _credential(pairs, "password", check_password_form)
        uid, code = _registration_code(_code(pairs, "last_name"))
        await _refuse_if_code_locked(self, everyone=True)
        # The code first, then the username: "taken" is told only to someone holding a
        # valid code, so the form does not list usernames for free.
        user = None
        if uid is not None:
            try:
                user = await self.stores.users.get(uid)
            except UserNotFound:
                user = None
        owner = await self.stores.kv.peek_code(CODE_PURPOSE_REGISTER, code) \
            if user is not None else None
        if user is None or owner != user.openid:
            await _code_failed(self, CODE_PURPOSE_REGISTER, user, everyone=True)
            raise ApiError(BAD_CODE, "验证码无效或已过期：请在公众号发送「验证码」获取"
                           "（形如 1001-483920，5 分钟内有效，只能用一次），填在 last_name 里")
        if user.has_account:
            raise ApiError(TAKEN, f"这个微信已经绑定了 API 账号「{user.username}」")
        if await self.stores.users.by_username(username) is not None:
            raise ApiError(TAKEN, f"用户名「{username}」已被使用，换一个再试（验证码仍然有效）")
        password_hash = await self.api.passwords.hash(password, self.client_group())
        ttl_ms = await self.stores.kv.consume_code_of(CODE_PURPOSE_REGISTER, code, user.openid)
        if ttl_ms is None:  # used by a concurrent request a moment ago
            raise ApiError(BAD_CODE, "验证码已被使用：请在公众号重新发送「验证码」")
        try:
            user = await self.stores.users.set_credentials(user.uid, username, password_hash)
        except UsernameTaken:
            # Lost a race for the name: that is no reason to burn the user's code.
            await self.stores.kv.give_back_code(CODE_PURPOSE_REGISTER, code, user.openid,
                                                ttl_ms)
            raise ApiError(TAKEN, f"用户名「{username}」已被使用，换一个再试（验证码仍然有效）"
                           ) from None
        log.info("web account registered for user %d", user.uid)
        return {"data": {"userid": user.uid, "username": username}}


def _code(pairs: Pairs, name: str) -> str:
    """A one-time code field: any short string (a wrong one is -1, "invalid code"), but
    not a novel: that is a malformed request (-4)."""
    code = bodies.text_field(pairs, name).strip()
    if len(code) > MAX_CODE_CHARS:
        raise BadInput(f"{name} 太长：验证码形如 1001-483920")
    return code


_REGISTRATION_CODE = re.compile(r"(\d{1,12})\s*[-－—–]\s*(\d{6})")


def _registration_code(raw: str) -> tuple[int | None, str]:
    """``1001-483920`` → (1001, "483920"); anything else → (None, raw): a wrong code."""
    found = _REGISTRATION_CODE.fullmatch(raw)
    if found is None:
        return None, raw
    return int(found.group(1)), found.group(2)


async def _refuse_if_code_locked(handler: ApiHandler, *, everyone: bool = False) -> None:
    lockout = handler.api.lockout
    wait = await lockout.remaining(CODE_BY_IP, handler.client_group())
    if everyone:
        wait = max(wait, await lockout.remaining(CODE_GLOBAL, "all"))
    if wait > 0:
        raise ApiError(BAD_CODE, f"验证码错误次数过多，请 {minutes(wait)} 分钟后再试",
                       status=429, headers={"Retry-After": str(int(wait) + 1)})


async def _code_failed(handler: ApiHandler, purpose: str, target: User | None, *,
                       everyone: bool = False) -> None:
    """Count a wrong code: against the address, all addresses (registration) and the
    user it was tried against, whose live code dies after a few wrong tries."""
    lockout = handler.api.lockout
    await lockout.failed(CODE_BY_IP, handler.client_group())
    if everyone and await lockout.failed(CODE_GLOBAL, "all"):
        log.warning("wrong %s codes from all addresses reached %d: codes refused for %d min",
                    purpose, CODE_GLOBAL.failures, CODE_GLOBAL.lockout_s // 60)
    if target is not None and await lockout.failed(CODE_BY_TARGET, f"{purpose} {target.uid}"):
        owner = target.openid if purpose == CODE_PURPOSE_REGISTER else str(target.uid)
        if await handler.stores.kv.void_code(purpose, owner):
            log.info("%s code of user %d voided after %d wrong tries", purpose, target.uid,
                     CODE_BY_TARGET.failures)


class LoginHandler(ApiHandler):
    """``POST /account/login``: sets the session cookie and returns the CSRF token."""

    SUPPORTED_METHODS = ("POST",)
    login_required = False

    async def act(self) -> dict[str, Any]:
        pairs = self.pairs()
        username = _credential(pairs, "username", normalize_username)
        password = bodies.text_field(pairs, "password")
        if len(password.encode("utf-8")) > PASSWORD_MAX_BYTES:
            # No account has such a password (registration refuses it) and bcrypt would
            # refuse to compare it: a malformed request, not a wrong password.
            raise BadInput(f"密码最多 {PASSWORD_MAX_BYTES} 字节")
        group = self.client_group()
        with self.api.passwords.login_slot(group):
            return await self._login(username, password, group)

    async def _login(self, username: str, password: str, group: str) -> dict[str, Any]:
        pair = f"{username} {group}"
        lockout = self.api.lockout
        # Every attempt counts here, right or wrong: logins cost a bcrypt check each.
        wait = await lockout.remaining(LOGIN_RATE_BY_IP, group)
        if wait > 0:
            raise ApiError(BAD_LOGIN, f"登录请求太频繁，请 {int(wait) + 1} 秒后再试",
                           status=429, headers={"Retry-After": str(int(wait) + 1)})
        await lockout.failed(LOGIN_RATE_BY_IP, group)
        # Checked before the password: a locked pair answers the same whether or not
        # the password is right, so the lock cannot be used as an oracle.
        wait = max(await lockout.remaining(LOGIN_BY_USERNAME, pair),
                   await lockout.remaining(LOGIN_BY_IP, group))
        if wait > 0:
            raise _locked(wait)
        if await lockout.remaining(LOGIN_SOFT_BY_USERNAME, username) > 0:
            # Slow mode for a username under attack from many addresses: one check per
            # interval for everyone together, never a lock.
            turn = await lockout.take_turn(LOGIN_SOFT_BY_USERNAME, username,
                                           LOGIN_SLOW_INTERVAL_S)
            if turn > 0:
                raise ApiError(BAD_LOGIN, "这个账号最近登录失败太多，请稍后再试", status=429,
                               headers={"Retry-After": str(int(turn))})
        user = await self.stores.users.by_username(username)
        password_hash = user.password_hash if user is not None else None
        # An unknown username is checked against a dummy hash: the same work, the same
        # answer, so the timing does not tell which usernames exist.
        if not await self.api.passwords.verify(password, password_hash, group) \
                or user is None or password_hash is None:
            locked_pair = await lockout.failed(LOGIN_BY_USERNAME, pair)
            locked_ip = await lockout.failed(LOGIN_BY_IP, group)
            await lockout.failed(LOGIN_SOFT_BY_USERNAME, username)
            # Not the username: people type their password into that box by mistake.
            log.info("failed web login (%s)",
                     f"user {user.uid}" if user is not None else "unknown username")
            if locked_pair or locked_ip:
                raise _locked(LOGIN_LOCKOUT_S)
            raise ApiError(BAD_LOGIN, "用户名或密码错误")
        await lockout.clear(LOGIN_BY_USERNAME, pair)
        if self.api.passwords.needs_rehash(password_hash):
            await self.stores.users.set_password(
                user.uid, await self.api.passwords.hash(password, group))
        session = await self.api.sessions.create(user.uid)
        self.set_session_cookies(session)
        return {"csrf_token": session.csrf, "data": {"userid": user.uid, "username": username}}


def _locked(wait: float) -> ApiError:
    return ApiError(BAD_LOGIN, f"登录失败次数过多，请 {minutes(wait)} 分钟后再试；"
                    "也可以在公众号发送「重置密码」重设密码", status=429,
                    headers={"Retry-After": str(int(wait) + 1)})


class LogoutHandler(ApiHandler):
    """``GET /account/logout`` (as in the original; POST too): ends the session.
    Always 200, logged in or not: the result is the same, logged out.  No CSRF token is
    needed: a forged logout cannot do more than what the user could do with one click."""

    SUPPORTED_METHODS = ("GET", "POST")
    login_required = False

    async def act(self) -> dict[str, Any]:
        raw = self.get_signed_cookie(SESSION_COOKIE, max_age_days=SESSION_DAYS)
        if raw:
            await self.api.sessions.end(raw.decode())
        self.clear_session_cookies()
        return {}


class ResetHandler(ApiHandler):
    """``POST /account/reset``: username, the code from 重置密码, and the new password.
    Ends every session of the account (whoever knew the old password is out) and lifts
    login locks on it: the owner's way in when a guesser has locked their address out.

    An unknown username gets exactly the answer of a wrong code, and counts the same."""

    SUPPORTED_METHODS = ("POST",)
    login_required = False

    async def act(self) -> dict[str, Any]:
        pairs = self.pairs()
        username = _credential(pairs, "username", normalize_username)
        code = _code(pairs, "code")
        password = _credential(pairs, "password", check_password_form)
        await _refuse_if_code_locked(self)
        user = await self.stores.users.by_username(username)
        # Peek before consuming: a code that belongs to someone else must not be used up
        # (and so voided) by a wrong guess here.
        owner = await self.stores.kv.peek_code(CODE_PURPOSE_RESET, code) \
            if user is not None else None
        if user is None or owner != str(user.uid):
            await _code_failed(self, CODE_PURPOSE_RESET, user)
            raise _bad_reset_code()
        password_hash = await self.api.passwords.hash(password, self.client_group())
        if await self.stores.kv.consume_code_of(CODE_PURPOSE_RESET, code, str(user.uid)) is None:
            raise _bad_reset_code()
        await self.stores.users.set_password(user.uid, password_hash)
        await self.api.sessions.end_all(user.uid)
        lockout = self.api.lockout
        await lockout.clear(LOGIN_BY_USERNAME, f"{username} {self.client_group()}")
        await lockout.clear(LOGIN_SOFT_BY_USERNAME, username)
        log.info("web password reset for user %d", user.uid)
        return {}


def _bad_reset_code() -> ApiError:
    return ApiError(BAD_CODE, "用户名或验证码不对，或验证码已过期：请在公众号发送「重置密码」"
                    "获取（5 分钟内有效，只能用一次）")


class InfoHandler(ApiHandler):
    """``GET /account/info``: who the session belongs to."""

    async def act(self) -> dict[str, Any]:
        user = self.user
        bot = await self.api.bot.status(user)
        return {"data": {
            "userid": user.uid, "username": user.username, "openid": user.openid,
            "nickname": user.nickname, "wechat_name": user.wechat_name or bot.nickname,
            "email": user.email, "autoreply": user.autoreply, "rule_count": user.rule_count,
            "bot": {"state": bot.state, "nickname": bot.nickname,
                    "replies_today": bot.replies_today},
        }}


# -- /database ----------------------------------------------------------------------------


class ShowHandler(ApiHandler):
    """``GET /database/show``: ``{"data": {"01": {"关键词": "回复"}, …}}``."""

    async def act(self) -> dict[str, Any]:
        return {"data": rules_data(await self.stores.rules.list(self.user.uid))}


def _rule_error(err: Exception) -> ApiError:
    if isinstance(err, DuplicateKeyword):
        where = f"（已有编号 {err.number:02d}）" if err.number else ""
        return ApiError(TAKEN, f"关键词“{_preview(err.keyword)}”重复{where}，什么都没有改")
    if isinstance(err, InvalidRule):
        return ApiError(BAD_PARAMS, f"参数错误：{err}")
    if isinstance(err, RuleLimitReached):
        if err.left:
            # A batch bigger than what is left: say what would fit (nothing was added).
            return ApiError(BAD_PARAMS, f"规则太多：最多 {err.limit} 条，最多还能添加 "
                                        f"{err.left} 条，什么都没有添加")
        return ApiError(BAD_PARAMS, f"规则已满（最多 {err.limit} 条），先删除不用的")
    if isinstance(err, RuleNotFound):
        return ApiError(NOT_YOURS, f"你没有编号为 {err.number:02d} 的规则")
    raise err


class AddHandler(ApiHandler):
    """``POST /database/add``: ``{"关键词": "回复", …}``, all added or none."""

    SUPPORTED_METHODS = ("POST",)

    async def act(self) -> dict[str, Any]:
        items = bodies.text_pairs(self.pairs())
        if not items:
            raise BadInput("请求体里没有规则，例如 {\"苹果\": \"梨子\"}")
        limit = self.stores.rules.limits.rules_max
        if len(items) > limit:
            raise BadInput(f"一次最多添加 {limit} 条")
        batch = [(*keyword_and_mode(keyword), reply) for keyword, reply in items]
        try:
            added = await self.stores.rules.add_many(
                self.user.uid, [(keyword, reply, mode) for keyword, mode, reply in batch])
        except (DuplicateKeyword, InvalidRule, RuleLimitReached) as err:
            raise _rule_error(err) from None
        return {"data": rules_data(added)}


class DeleteHandler(ApiHandler):
    """``GET /database/delete/?id=N`` (as in the original) or ``DELETE``.

    A GET that deletes is the original's contract; cross-site forgery of it is stopped
    like a POST's: the CSRF token is required on it too.
    """

    SUPPORTED_METHODS = ("GET", "DELETE")
    csrf_methods = frozenset({"GET", "DELETE"})

    async def act(self) -> dict[str, Any]:
        number = self.rule_number()
        try:
            rule = await self.stores.rules.delete(self.user.uid, number)
        except RuleNotFound as err:
            raise _rule_error(err) from None
        return {"data": rules_data([rule])}


class UpdateHandler(ApiHandler):
    """``POST /database/update/?id=N`` with ``{"新关键词": "新回复"}``."""

    SUPPORTED_METHODS = ("POST",)

    async def act(self) -> dict[str, Any]:
        number = self.rule_number()
        items = bodies.text_pairs(self.pairs())
        if len(items) != 1:
            raise BadInput("请求体要正好一对 {\"新关键词\": \"新回复\"}")
        ((raw_keyword, reply),) = items
        keyword, mode = keyword_and_mode(raw_keyword)
        try:
            rule = await self.stores.rules.update(self.user.uid, number, reply=reply,
                                                  keyword=keyword, mode=mode)
        except (DuplicateKeyword, InvalidRule, RuleNotFound) as err:
            raise _rule_error(err) from None
        return {"data": rules_data([rule])}


# -- /autoreply, /wechat --------------------------------------------------------------------


class AutoreplyHandler(ApiHandler):
    """``POST /autoreply/on`` and ``/autoreply/off``, like 开启 / 关闭."""

    SUPPORTED_METHODS = ("POST",)

    def initialize(self, api: Api, on: bool) -> None:  # type: ignore[override]
        super().initialize(api)
        self.on = on

    async def act(self) -> dict[str, Any]:
        user = await self.stores.users.set_autoreply(self.user.uid, self.on)
        await self.api.bot.rules_changed(user)
        return {"autoreply": user.autoreply}


class QrLoginHandler(ApiHandler):
    """``GET /wechat/testlogin``: start a bot session like 登录; the QR is at
    ``/static/qrimages/<pid>.png`` and its page at ``/qr/<pid>``.

    A GET, as in the original, and without a CSRF token: a forged one only shows the
    user's own QR link to nobody (the answer is not readable cross-site).
    """

    async def act(self) -> dict[str, Any]:
        try:
            ticket = await self.api.bot.login(self.user)
        except LoginInProgress:
            raise ApiError(UNKNOWN, "正在生成二维码，请几秒后再试") from None
        return {"pid": ticket.pid, "url": ticket.url, "state": ticket.state,
                "nickname": ticket.nickname}


def routes(api: Api) -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]]:
    """The URL table; a trailing slash is optional everywhere (the original wrote
    ``/database/delete/?id=N`` but ``/account/login``)."""
    args = {"api": api}
    return [
        (r"/account/register/?", RegisterHandler, args),
        (r"/account/login/?", LoginHandler, args),
        (r"/account/logout/?", LogoutHandler, args),
        (r"/account/reset/?", ResetHandler, args),
        (r"/account/info/?", InfoHandler, args),
        (r"/database/show/?", ShowHandler, args),
        (r"/database/add/?", AddHandler, args),
        (r"/database/delete/?", DeleteHandler, args),
        (r"/database/update/?", UpdateHandler, args),
        (r"/autoreply/on/?", AutoreplyHandler, {**args, "on": True}),
        (r"/autoreply/off/?", AutoreplyHandler, {**args, "on": False}),
        (r"/wechat/testlogin/?", QrLoginHandler, args),
    ]


def build_api(settings: Settings, stores: Stores, bot: BotControl, *,
              password_rounds: int = DEFAULT_BCRYPT_ROUNDS,
              now: Callable[[], float] = wall_clock) -> Api:
    return Api(settings, stores, bot, Passwords(password_rounds), now)

