"""The fake web WeChat's test hooks over HTTP (``/_fake/…``) and its demo page.

The hooks are thin: each calls the :class:`sandbox.webwx.FakeWebWx` method of the
same name (see the table in :mod:`sandbox.webwx`); the page offers buttons for a human
doing a demo.
"""

from __future__ import annotations

import dataclasses
import html
from typing import Any

import tornado.web

from sandbox.webwx.protocol import SEND_FAILED_RET, Logout, _Base, _truthy

# -- hooks over HTTP -------------------------------------------------------------------


def _logout_dict(item: Logout) -> dict[str, Any]:
    return dataclasses.asdict(item)


class HookHandler(_Base):
    def args(self) -> dict[str, Any]:
        content_type = self.request.headers.get("Content-Type", "")
        if content_type.startswith("application/json") or self.request.body[:1] == b"{":
            return self.json_body()
        return {k: self.get_body_argument(k) for k in self.request.body_arguments}

    def get(self, hook: str) -> None:
        fake = self.fake
        try:
            if hook == "logins":
                self.reply_json({"logins": fake.pending_logins()})
            elif hook == "sessions":
                self.reply_json({"sessions": fake.sessions()})
            elif hook == "accounts":
                with fake._lock:
                    accounts = [a.summary() for a in fake.accounts.values()]
                self.reply_json({"accounts": accounts})
            elif hook == "sent":
                uin = self.get_query_argument("uin", None)
                failed = _truthy(self.get_query_argument("include_failed", "0"))
                self.reply_json({"sent": [dataclasses.asdict(s) for s in
                                          fake.sent(uin, include_failed=failed)]})
            elif hook == "logouts":
                self.reply_json({"logouts": [_logout_dict(x) for x in fake.logouts]})
            else:
                raise tornado.web.HTTPError(404)
        except LookupError as exc:
            self.set_status(404)
            self.reply_json({"ok": False, "error": str(exc)})

    def post(self, hook: str) -> None:
        fake = self.fake
        form = not self.request.headers.get("Content-Type", "").startswith(
            "application/json") and self.request.body[:1] != b"{"
        body = self.args()
        result: Any = None
        try:
            if hook == "scan":
                result = fake.scan(str(body["uuid"]), _ref(body["account"])).summary()
            elif hook == "confirm":
                fake.confirm(str(body["uuid"]))
            elif hook == "refuse":
                fake.refuse(str(body["uuid"]), str(body.get("variant", "1203")))
            elif hook == "expire":
                fake.expire(str(body["uuid"]))
            elif hook == "kick":
                fake.kick(_ref(body["uin"]), str(body.get("retcode", "1101")))
            elif hook == "push_friend":
                result = fake.push_friend_text(_ref(body["uin"]), _ref(body["from_user"]),
                                               str(body["text"]))
            elif hook == "push_group":
                result = fake.push_group_text(
                    _ref(body["uin"]), _ref(body["group"]), _ref(body["member"]),
                    str(body["text"]), _truthy(body.get("mention_self", False)))
            elif hook == "push_self":
                result = fake.push_self_text(_ref(body["uin"]), _ref(body["to_user"]),
                                             str(body["text"]))
            elif hook == "push_mp":
                result = fake.push_mp_text(_ref(body["uin"]), _ref(body["mp"]),
                                           str(body["text"]))
            elif hook == "push_message":
                result = fake.push_message(_ref(body["uin"]), str(body["kind"]),
                                           _ref(body.get("from_user", 0)))
            elif hook == "add_friend":
                result = fake.add_friend(_ref(body["uin"]))
            elif hook == "spin":
                fake.spin(_ref(body["uin"]), int(body.get("rounds", 20)),
                          str(body.get("selector", "2")))
            elif hook == "fail_synccheck":
                fake.fail_synccheck(_ref(body["uin"]), int(body.get("n", 1)),
                                    int(body.get("status", 503)))
            elif hook == "fail_webwxsync":
                fake.fail_webwxsync(_ref(body["uin"]), int(body.get("n", 1)),
                                    int(body.get("ret", -1)))
            elif hook == "fail_sends":
                fake.fail_sends(_ref(body["uin"]), int(body.get("n", 1)),
                                int(body.get("ret", SEND_FAILED_RET)))
            elif hook == "accounts":
                options = {k: int(body[k]) for k in ("friends", "groups", "members", "mps",
                                                      "uin") if body.get(k) not in (None, "")}
                result = fake.add_account(
                    str(body["nickname"]), **options,
                    refuse_web_login=_truthy(body.get("refuse_web_login", False)),
                    allow_push=_truthy(body.get("allow_push", True)),
                    group_display_name=str(body.get("group_display_name", ""))).summary()
            elif hook == "options":
                fake.set_options(**body)
            elif hook == "reset":
                fake.reset()
            else:
                raise tornado.web.HTTPError(404)
        except (KeyError, TypeError, ValueError, LookupError) as exc:
            if form:
                raise tornado.web.HTTPError(400, f"{hook}: {exc!r}") from None
            self.set_status(404 if isinstance(exc, LookupError) else 400)
            self.reply_json({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            return
        if form:
            self.redirect("/_fake/", status=303)
            return
        self.reply_json({"ok": True, "result": result})


def _ref(value: Any) -> str | int:
    """JSON may carry a uin or an index as a number; forms carry everything as text."""
    if isinstance(value, bool):
        raise TypeError("expected a name or a number")
    if isinstance(value, int):
        return value
    return str(value)


_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>fake web WeChat</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}} form{{display:inline}}</style></head>
<body><h1>fake web WeChat</h1>
<p><a href="/_fake/">refresh</a> · JSON: <a href="/_fake/logins">logins</a>,
<a href="/_fake/sessions">sessions</a>, <a href="/_fake/accounts">accounts</a>,
<a href="/_fake/sent">sent</a>, <a href="/_fake/logouts">logouts</a></p>
<h2>Pending logins</h2>
<table><tr><th>uuid</th><th>state</th><th>account</th><th>actions</th></tr>{logins}</table>
<h2>Web sessions</h2>
<table><tr><th>account</th><th>uin</th><th>polling</th><th>push a friend message</th>
<th></th></tr>{sessions}</table>
<h2>Add an account</h2>
<form method="post" action="/_fake/accounts">nickname <input name="nickname" required>
friends <input name="friends" value="5" size="4"> groups <input name="groups" value="2"
size="3"> <button>add</button></form>
<h2>Last sent messages</h2><table><tr><th>uin</th><th>to</th><th>text</th><th>ok</th></tr>
{sent}</table></body></html>
"""


class PageHandler(_Base):
    def get(self) -> None:
        fake = self.fake
        esc = html.escape
        logins = []
        for login in fake.pending_logins():
            uuid = esc(login["uuid"])
            hidden = f'<input type="hidden" name="uuid" value="{uuid}">'
            if login["state"] == "waiting":
                actions = (f'<form method="post" action="/_fake/scan">{hidden}'
                           '<input name="account" value="alice" size="10">'
                           '<button>scan</button></form>')
            else:
                actions = ""
            if login["state"] in ("waiting", "scanned") and (login["uin"] or
                                                              login["push"]):
                actions += (f'<form method="post" action="/_fake/confirm">{hidden}'
                            '<button>confirm</button></form>'
                            f'<form method="post" action="/_fake/refuse">{hidden}'
                            '<button>refuse (1203)</button></form>'
                            f'<form method="post" action="/_fake/refuse">{hidden}'
                            '<input type="hidden" name="variant" value="env">'
                            '<button>refuse (环境异常)</button></form>')
            actions += (f'<form method="post" action="/_fake/expire">{hidden}'
                        '<button>expire</button></form>')
            who = esc(login["nickname"] or "")
            kind = "push" if login["push"] else "QR"
            logins.append(f"<tr><td>{uuid}</td><td>{esc(login['state'])} ({kind})</td>"
                          f"<td>{who}</td><td>{actions}</td></tr>")
        sessions = []
        for item in fake.sessions():
            uin = item["uin"]
            acct = fake.account(uin)
            options = "".join(f'<option value="{i}">{esc(acct.friend_nick(i))}</option>'
                              for i in range(min(acct.friends, 50)))
            push = (f'<form method="post" action="/_fake/push_friend">'
                    f'<input type="hidden" name="uin" value="{uin}">'
                    f'<select name="from_user">{options}</select>'
                    '<input name="text" value="你好" size="20"><button>send</button></form>')
            kick = (f'<form method="post" action="/_fake/kick">'
                    f'<input type="hidden" name="uin" value="{uin}">'
                    '<button>kick (1101)</button></form>'
                    f'<form method="post" action="/_fake/kick">'
                    f'<input type="hidden" name="uin" value="{uin}">'
                    '<input type="hidden" name="retcode" value="1102">'
                    '<button>WeChat closes it (1102)</button></form>')
            sessions.append(f"<tr><td>{esc(item['nickname'])}</td><td>{uin}</td>"
                            f"<td>{item['polling']}</td><td>{push}</td><td>{kick}</td></tr>")
        sent = [f"<tr><td>{s.uin}</td><td>{esc(s.to_user[:16])}…</td><td>{esc(s.text)}</td>"
                f"<td>{'yes' if s.ok else s.ret}</td></tr>"
                for s in fake.sent(include_failed=True)[-20:]]
        self.reply(_PAGE.format(logins="".join(logins), sessions="".join(sessions),
                                sent="".join(sent)), "text/html")
