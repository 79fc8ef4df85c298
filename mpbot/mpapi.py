"""Client for the WeChat official-account (公众号) API: the one choke point for every call
to ``WXR_MP_API_BASE`` (docs/ARCHITECTURE.md, 'The official-account edge').

Why it is built this way:

* **Never blocks the IOLoop.** Calls go through Tornado's ``AsyncHTTPClient`` with an
  explicit connect timeout and request timeout on every request, so a slow or dead
  WeChat costs one coroutine a bounded wait and nothing else.  Tornado's shared client
  runs at most 10 requests at once per IOLoop; a request queued behind them gives up
  after ``min(connect_timeout, timeout)`` like any other timeout.
* **One access token for all processes.** WeChat allows a limited number of token
  fetches a day and, with the ``token`` endpoint, each fetch starts retiring the previous
  token (it stays valid for about 5 more minutes).  Every web process fetching its own
  would burn the quota and make the processes invalidate each other.  So the token lives
  in Redis (``<prefix>mp:token:<appid>``) with a TTL of ``expires_in`` minus a safety
  margin, and is fetched by one process at a time under a Redis lock (``SET NX PX``,
  released by compare-and-delete).  Others wait, boundedly, for it to appear.  Inside a
  process, concurrent callers share a single in-flight fetch, and the token is kept in
  memory until its refresh time by the injected clock.
* **At most one retry, and only for a rejected token** (40001, 40014, 42001): the cached
  token is dropped only if it is still the one that failed (compare-and-delete, so a
  fresh token that another process has just stored survives), a fresh one is obtained,
  and the call is repeated once.  Nothing else is retried: a customer-service message
  whose answer was lost may well have been delivered, and sending it twice is worse than
  reporting a failure.
* **Typed errors in plain words.** :class:`MpApiFinal` means "do not try this user
  again" (48-hour window over, too many messages, unfollowed, invalid openid);
  :class:`MpApiUnavailable` means "WeChat or the network failed, maybe later";
  :class:`MpApiAuthFailed` means the credentials or the token are refused;
  :class:`MpApiDisabled` means no AppID/AppSecret is configured.  No message, log line or
  ``repr`` contains the access token or the AppSecret.

``stable_token``: WeChat also offers ``POST stable_token`` (JSON body with
``grant_type``, ``appid``, ``secret``, ``force_refresh``).  In its normal mode it hands
every caller the *same* valid token, so separate fetchers no longer invalidate each
other, and the secret travels in the body instead of the URL.  Pass
``stable_token=True`` to use it; the sharing through Redis stays, because it still saves
calls.  ``force_refresh`` is never used: WeChat limits it to 20 calls a day and the
normal mode already returns the newest token.

Redis failures surface as :class:`store.errors.StoreUnavailable`, as everywhere else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from config.clock import wall_clock
from store.kv import KV

log = logging.getLogger("wxreply.mpapi")

# 40001 invalid or replaced token, 40014 malformed token, 42001 expired token.
TOKEN_ERRORS = frozenset({40001, 40014, 42001})
# Retrying these for the same user cannot succeed (WeChat's global return codes: invalid
# openid, not following, outside the 48-hour window, over the quota).
FINAL_ERRORS = frozenset({40003, 43004, 45015, 45047})
# WeChat's "system busy, try again later".
BUSY = -1

_PLAIN: dict[int, str] = {
    -1: "WeChat is busy",
    40001: "the access token was rejected (invalid, or replaced by a newer one)",
    40002: "the grant type is invalid",
    40003: "the openid is invalid for this official account",
    40013: "the AppID is invalid (check WXR_MP_APPID)",
    40014: "the access token is malformed",
    40125: "the AppSecret is wrong (check WXR_MP_SECRET)",
    40164: "this server's IP address is not on the official account's IP whitelist",
    42001: "the access token has expired",
    43004: "the user no longer follows the official account",
    45009: "the daily quota for this API is used up",
    45015: ("the user has not written to the official account in the last 48 hours, so "
            "customer-service messages cannot reach them"),
    45047: "too many customer-service messages were sent to this user without a reply",
    48001: "the official account is not authorised to use this API",
}

# Defensive scrubbing of anything that ends up in an error message: WeChat's errmsg and
# socket errors do not contain credentials today, but a message is no place to find out.
_CREDENTIAL_IN_TEXT = re.compile(r"(access_token|secret)=[^&\s]+", re.IGNORECASE)

# The lock must outlive one token fetch (bounded by the request timeout) plus a few Redis
# round trips, so that it only lapses when its holder has died.
_LOCK_SLACK_S = 1.0
# After the lock of a dead holder lapses, a waiter still needs time to fetch itself.
_WAIT_SLACK_S = 0.5


class MpApiError(Exception):
    """A call to the official-account API failed.  ``errcode`` is WeChat's code, or
    None when the failure happened before WeChat answered; ``errmsg`` is WeChat's own
    text (or ours); ``call`` names the API path; ``str(err)`` is a plain sentence."""

    def __init__(self, errcode: int | None, errmsg: str, *, call: str = "") -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        self.call = call
        super().__init__(_sentence(errcode, errmsg, call))


class MpApiUnavailable(MpApiError):
    """No usable answer: timeout, connection failure, HTTP 5xx or garbage, or WeChat's
    "system busy".  Worth trying again later; never retried here (see module doc)."""


class MpApiFinal(MpApiError):
    """WeChat refused this message for this user for a reason that a retry cannot fix:
    45015 (48-hour window over), 45047 (too many messages), 43004 (unfollowed), 40003
    (invalid openid)."""


class MpApiAuthFailed(MpApiError):
    """The AppID/AppSecret were refused when fetching a token, or WeChat kept rejecting
    a freshly fetched token.  An operator has to look at the configuration."""


class MpApiDisabled(MpApiError):
    """No AppID or AppSecret is configured: the client makes no network call at all."""


def _sentence(errcode: int | None, errmsg: str, call: str) -> str:
    where = f"official-account API {call}: " if call else "official-account API: "
    if errcode is None:
        return where + errmsg
    plain = _PLAIN.get(errcode, "WeChat refused the call")
    return f"{where}{plain} (errcode {errcode}: {errmsg})"


@dataclasses.dataclass(frozen=True, slots=True)
class _Token:
    """A token as shared in Redis.  ``raw`` is the exact stored value, kept so that
    invalidation can compare-and-delete exactly what this process saw."""

    raw: bytes = dataclasses.field(repr=False)
    value: str = dataclasses.field(repr=False)
    refresh_at: float


def _consume_exception(task: asyncio.Future[Any]) -> None:
    # Every waiter of a shared fetch sees its exception; this only stops asyncio from
    # logging "exception was never retrieved" when all of them were cancelled.
    if not task.cancelled():
        task.exception()


class MpApi:
    """Async client for the official-account API (see the module docstring for why).

    ``base_url`` is ``WXR_MP_API_BASE`` (tests aim it at a fake on 127.0.0.1);
    ``timeout`` bounds each HTTP request as a whole, ``connect_timeout`` (default: the
    smaller of ``timeout`` and 3 s) the DNS lookup and TCP/TLS connect; ``now`` is the
    clock that decides when a shared token is due for refresh; ``token_margin_s`` is how
    long before WeChat's expiry the token is refreshed (WeChat keeps the old one valid
    for about 5 minutes after a refresh, hence 300 s).

    One instance is meant for one event loop, like Tornado's HTTP client.
    """

    def __init__(self, base_url: str, appid: str, secret: str, kv: KV, *,
                 timeout: float = 5.0, connect_timeout: float | None = None,
                 now: Callable[[], float] = wall_clock, stable_token: bool = False,
                 token_margin_s: int = 300) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.appid = appid
        self._secret = secret
        self._kv = kv
        self.timeout = timeout
        self.connect_timeout = min(timeout, 3.0) if connect_timeout is None else connect_timeout
        self._now = now
        self.stable_token = stable_token
        self.token_margin_s = token_margin_s
        self.token_key = f"mp:token:{appid}"
        self.lock_key = f"mp:token:{appid}:lock"
        self._lock_ttl_ms = int((self.timeout + _LOCK_SLACK_S) * 1000)
        self._token_wait_s = self._lock_ttl_ms / 1000 + _WAIT_SLACK_S
        self._memo: _Token | None = None
        self._inflight: asyncio.Task[_Token] | None = None

    def __repr__(self) -> str:
        return f"MpApi(base_url={self.base_url!r}, appid={self.appid!r}, enabled={self.enabled})"

    @property
    def enabled(self) -> bool:
        """False when AppID or AppSecret is empty: every call raises MpApiDisabled."""
        return bool(self.appid and self._secret)

    # -- public calls ------------------------------------------------------------------

    async def send_text(self, openid: str, text: str) -> None:
        """Send a customer-service text message to a follower.

        Raises MpApiFinal (do not retry for this user), MpApiUnavailable (maybe later),
        MpApiAuthFailed, MpApiDisabled, or MpApiError for any other errcode.
        """
        # ensure_ascii=False: the body carries CJK and emoji as UTF-8, not \u escapes.
        body = json.dumps({"touser": openid, "msgtype": "text", "text": {"content": text}},
                          ensure_ascii=False).encode("utf-8")
        await self._call("POST", "message/custom/send", {}, body)

    async def user_info(self, openid: str) -> dict[str, Any] | None:
        """What WeChat tells about a follower (``user/info``, lang zh_CN), as it returns
        it: ``subscribe``, ``openid``, ``subscribe_time``, ``unionid``, ``remark``,
        ``tagid_list`` … and ``nickname``/``headimgurl`` only for the accounts that
        still get them (WeChat stopped returning them for most accounts in 2021).

        None when the openid does not follow the account (``subscribe`` 0) or is
        unknown to it (40003): for a lookup that is an answer, not a failure.
        """
        try:
            data = await self._call("GET", "user/info", {"openid": openid, "lang": "zh_CN"})
        except MpApiFinal as exc:
            if exc.errcode == 40003:
                return None
            raise
        if not data.get("subscribe"):
            return None
        return {k: v for k, v in data.items() if k not in {"errcode", "errmsg"}}

    async def create_menu(self, menu: dict[str, Any]) -> None:
        """Install the account's custom menu (``menu/create``; it replaces the current
        one).  ``menu`` is WeChat's ``{"button": [...]}``; WeChat allows 3 top-level
        buttons of at most 5 sub-buttons each (40016 otherwise), names of at most 16 /
        60 bytes (40018) and keys of at most 128 bytes (40019)."""
        body = json.dumps(menu, ensure_ascii=False).encode("utf-8")
        await self._call("POST", "menu/create", {}, body)

    async def access_token(self) -> str:
        """The current shared access token (fetched if needed).  For callers that must
        build their own request; prefer adding a method here so that the retry and the
        error mapping stay in one place."""
        self._check_enabled("token")
        return (await self._token()).value

    # -- the choke point ---------------------------------------------------------------

    async def _call(self, method: str, path: str, query: dict[str, str],
                    body: bytes | None = None) -> dict[str, Any]:
        """One API call with the shared token; one retry if WeChat rejects the token."""
        self._check_enabled(path)
        rejected: _Token | None = None
        for attempt in (1, 2):
            token = await self._token(not_this=rejected)
            data = await self._http(method, path, {**query, "access_token": token.value}, body)
            errcode = _errcode(data, path)
            if errcode == 0:
                return data
            errmsg = self._scrub(str(data.get("errmsg", "")), token.value)
            if errcode in TOKEN_ERRORS:
                await self._invalidate(token)
                if attempt == 1:
                    log.warning("%s: access token rejected (errcode %d); fetching a fresh "
                                "one and retrying once", path, errcode)
                    rejected = token
                    continue
                raise MpApiAuthFailed(errcode, errmsg + " (also with a freshly fetched token)",
                                      call=path)
            if errcode in FINAL_ERRORS:
                raise MpApiFinal(errcode, errmsg, call=path)
            if errcode == BUSY:
                raise MpApiUnavailable(errcode, errmsg, call=path)
            raise MpApiError(errcode, errmsg, call=path)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _http(self, method: str, path: str, query: dict[str, str],
                    body: bytes | None = None) -> dict[str, Any]:
        """One HTTP request with both timeouts; the JSON object WeChat answered, or
        MpApiUnavailable.  The URL (which holds the token or secret) is never logged."""
        url = self.base_url + path + ("?" + urlencode(query) if query else "")
        request = HTTPRequest(
            url, method=method, body=body,
            headers={"Content-Type": "application/json; charset=utf-8"} if body is not None
            else None,
            connect_timeout=self.connect_timeout, request_timeout=self.timeout,
            follow_redirects=False,
        )
        started = time.monotonic()
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except HTTPClientError as exc:
            # Tornado reports timeouts and dropped streams as code 599; its message
            # ("Timeout during request", "Stream closed") names no URL.
            message = exc.message or type(exc).__name__
            if "timeout" in message.lower():
                detail = (f"no answer in time (connect timeout {self.connect_timeout:g} s, "
                          f"request timeout {self.timeout:g} s)")
            else:
                detail = f"the connection to WeChat failed ({message})"
            raise MpApiUnavailable(None, detail, call=path) from None
        except OSError as exc:  # refused, unreachable, DNS failure, TLS failure
            reason = exc.strerror or type(exc).__name__
            raise MpApiUnavailable(None, f"cannot connect to WeChat: {reason}",
                                   call=path) from None
        elapsed_ms = (time.monotonic() - started) * 1000
        if response.code != 200:
            raise MpApiUnavailable(None, f"WeChat answered HTTP {response.code}", call=path)
        try:
            data = json.loads(response.body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise MpApiUnavailable(None, "WeChat answered something that is not a JSON object",
                                   call=path)
        log.debug("%s %s answered errcode %s in %.0f ms", method, path,
                  data.get("errcode", 0), elapsed_ms)
        return data

    # -- the shared token --------------------------------------------------------------

    async def _token(self, not_this: _Token | None = None) -> _Token:
        """The token to use now: from memory, else from Redis, else freshly fetched.

        ``not_this`` is a token that was just rejected: a fetch that was already under
        way when it was rejected may still return it, so we then start one more.
        """
        memo = self._memo
        if memo is not None and memo != not_this and self._now() < memo.refresh_at:
            return memo
        for _ in range(2):
            token = await asyncio.shield(self._shared_fetch())
            if token != not_this:
                return token
        return token

    def _shared_fetch(self) -> asyncio.Task[_Token]:
        # One fetch per process at a time: concurrent callers await the same task.
        loop = asyncio.get_running_loop()
        task = self._inflight
        if task is None or task.done() or task.get_loop() is not loop:
            task = loop.create_task(self._load_or_fetch())
            task.add_done_callback(_consume_exception)
            self._inflight = task
        return task

    async def _load_or_fetch(self) -> _Token:
        """Take the token from Redis, or fetch it under the Redis lock; if another
        process holds the lock, wait (boundedly) for the token it stores."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._token_wait_s
        while True:
            token = await self._read_shared()
            if token is not None:
                return self._remember(token)
            owner = secrets.token_hex(16)
            if await self._kv.claim(self.lock_key, self._lock_ttl_ms, owner):
                try:
                    # Another process may have stored a token between our read and our
                    # claim; fetching again would retire the token it just shared.
                    token = await self._read_shared()
                    if token is None:
                        token = await self._fetch_and_share()
                    return self._remember(token)
                finally:
                    await self._kv.delete_if_equals(self.lock_key, owner)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise MpApiUnavailable(
                    None, f"no access token appeared within {self._token_wait_s:g} s while "
                    "another process was fetching it", call="token")
            await self._kv.wait_for(self.token_key, remaining, while_key=self.lock_key)

    async def _read_shared(self) -> _Token | None:
        raw = await self._kv.get(self.token_key)
        if raw is None:
            return None
        try:
            record = json.loads(raw)
            token = _Token(raw, str(record["access_token"]), float(record["refresh_at"]))
        except (ValueError, KeyError, TypeError):
            token = None
        if token is None or self._now() >= token.refresh_at:
            # Unreadable or due for refresh by our clock: drop exactly this value (a newer
            # one stored meanwhile stays) so that waiters wait for its successor.
            await self._kv.delete_if_equals(self.token_key, raw)
            return None
        return token

    async def _fetch_and_share(self) -> _Token:
        value, expires_in = await self._fetch_token()
        ttl_s = max(expires_in - min(self.token_margin_s, expires_in // 2), 1)
        refresh_at = self._now() + ttl_s
        raw = json.dumps({"access_token": value, "refresh_at": refresh_at}).encode()
        token = _Token(raw, value, refresh_at)
        await self._kv.put(self.token_key, raw, ttl_s * 1000)
        log.info("fetched a new official-account access token (WeChat says valid %d s; "
                 "shared for %d s)", expires_in, ttl_s)
        return token

    async def _fetch_token(self) -> tuple[str, int]:
        if self.stable_token:
            path = "stable_token"
            body = json.dumps({"grant_type": "client_credential", "appid": self.appid,
                               "secret": self._secret, "force_refresh": False}).encode()
            data = await self._http("POST", path, {}, body)
        else:
            path = "token"
            data = await self._http("GET", path, {"grant_type": "client_credential",
                                                  "appid": self.appid, "secret": self._secret})
        errcode = _errcode(data, path)
        if errcode:
            errmsg = self._scrub(str(data.get("errmsg", "")))
            if errcode == BUSY:
                raise MpApiUnavailable(errcode, errmsg, call=path)
            raise MpApiAuthFailed(errcode, errmsg, call=path)
        value, expires_in = data.get("access_token"), data.get("expires_in")
        if (not isinstance(value, str) or not value or isinstance(expires_in, bool)
                or not isinstance(expires_in, int) or expires_in <= 0):
            raise MpApiUnavailable(None, "WeChat answered without a usable access token",
                                   call=path)
        return value, expires_in

    def _remember(self, token: _Token) -> _Token:
        self._memo = token
        return token

    async def _invalidate(self, token: _Token) -> None:
        """Forget a token WeChat rejected, here and in Redis, unless it has already
        been replaced (compare-and-delete)."""
        if self._memo == token:
            self._memo = None
        await self._kv.delete_if_equals(self.token_key, token.raw)

    # -- helpers -----------------------------------------------------------------------

    def _check_enabled(self, call: str) -> None:
        if self.enabled:
            return
        missing = " and ".join(name for name, value in
                               (("WXR_MP_APPID", self.appid), ("WXR_MP_SECRET", self._secret))
                               if not value)
        raise MpApiDisabled(None, f"not configured ({missing} empty); nothing was sent",
                            call=call)

    def _scrub(self, text: str, *known: str) -> str:
        text = _CREDENTIAL_IN_TEXT.sub(r"\1=***", text)
        for secret in (self._secret, *known):
            if secret:
                text = text.replace(secret, "***")
        return text


def _errcode(data: dict[str, Any], path: str) -> int:
    errcode = data.get("errcode", 0)
    if isinstance(errcode, bool) or not isinstance(errcode, int):
        raise MpApiUnavailable(None, "WeChat answered an errcode that is not a number", call=path)
    return errcode
