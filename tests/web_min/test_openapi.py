"""docs/openapi.yaml against the running app: the two must agree.

* every route of the app (but ``/wechat``, the official account's endpoint, which is not
  part of this API) is a documented path, and every documented path is a route;
* each path's documented methods are exactly the ones it answers (any other is 405);
* every documented operation is called, with the document's own examples as request,
  and its answer (status, content type, JSON body) must be one the document describes,
  with no undocumented fields; secured operations are also called without a session
  (→ the documented 401) and without the CSRF token (→ the documented 403).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import tornado.web
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse

from store import Stores
from store.bots import QrStore
from tests.conftest import Web
from tests.web_min.conftest import Accounts, Client

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
DOC: dict[str, Any] = yaml.safe_load(DOC_PATH.read_text(encoding="utf-8"))
DOC_URI = "urn:wxreply:openapi"
REGISTRY = Registry().with_resource(
    DOC_URI, Resource.from_contents(DOC, default_specification=DRAFT202012))
METHODS = ("get", "post", "delete", "put", "patch")
UNDOCUMENTED_ROUTES = {"/wechat",  # the official account's push endpoint (docs/OFFICIAL_ACCOUNT.md)
                       "/", "/docs/API.md"}  # pages for people, not API operations (docs/API.md)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _pointer(*tokens: str) -> str:
    return "".join("/" + _escape(t) for t in tokens)


def _resolve(pointer: str) -> tuple[dict[str, Any], str]:
    """An OpenAPI object (following ``$ref``) and the JSON pointer where it lives."""
    node: Any = DOC
    for token in pointer.strip("/").split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    if "$ref" in node:
        return _resolve(node["$ref"].lstrip("#"))
    return node, pointer


def _operations() -> list[tuple[str, str]]:
    return [(path, method) for path, item in DOC["paths"].items()
            for method in METHODS if method in item]


def _example_path(path: str, pid: str | None = None) -> str:
    example = _resolve("/components/parameters/Pid")[0]["example"]
    return path.replace("{pid}", pid or example)


def test_the_document_is_well_formed() -> None:
    assert DOC["openapi"].startswith("3.1")
    for schema in DOC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for path, method in _operations():
        operation = DOC["paths"][path][method]
        assert operation["responses"], (path, method)
        for status in operation["responses"]:
            response, _ = _resolve(_pointer("paths", path, method, "responses", status))
            assert response["description"], (path, method, status)


def _handler_methods(handler: type[tornado.web.RequestHandler]) -> set[str]:
    implemented = {m for m in METHODS
                   if getattr(handler, m) is not getattr(tornado.web.RequestHandler, m)}
    supported = {m.lower() for m in handler.SUPPORTED_METHODS}
    return implemented & supported


def test_routes_and_methods_match_the_app(api_web: Web) -> None:
    rules = [(rule.matcher.regex, rule.target)  # type: ignore[attr-defined]
             for rule in api_web.app.wildcard_router.rules]
    documented = {_example_path(path): path for path in DOC["paths"]}
    for regex, handler in rules:
        if any(regex.fullmatch(path) for path in UNDOCUMENTED_ROUTES):
            continue
        matches = [doc for url, doc in documented.items() if regex.fullmatch(url)]
        assert matches, f"route {regex.pattern} ({handler.__name__}) is not in openapi.yaml"
        for doc_path in matches:
            assert set(DOC["paths"][doc_path]) & set(METHODS) == _handler_methods(handler), (
                doc_path, handler.__name__)
    for url, doc_path in documented.items():
        assert any(regex.fullmatch(url) for regex, _ in rules), (
            f"{doc_path} is documented but no route answers it")


class Checker:
    """Calls operations as the document describes them and checks the answers."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = AsyncHTTPClient()
        self.exercised: set[tuple[str, str, str]] = set()

    def request(self, path: str, method: str, *, pid: str | None = None,
                body: dict[str, Any] | None = None) -> tuple[str, bytes | None]:
        operation = DOC["paths"][path][method]
        query = {}
        for ref in operation.get("parameters", []):
            parameter, _ = _resolve(ref["$ref"].lstrip("#")) if "$ref" in ref else (ref, "")
            if parameter["in"] == "query":
                query[parameter["name"]] = parameter["example"]
        url = _example_path(path, pid) + (f"?{urllib.parse.urlencode(query)}" if query else "")
        if "requestBody" not in operation:
            return url, b"" if method in ("post", "put", "patch") else None
        example = dict(operation["requestBody"]["content"]["application/json"]["example"])
        example.update(body or {})
        return url, json.dumps(example, ensure_ascii=False).encode()

    async def call(self, path: str, method: str, client: Client | None, *,
                   csrf: bool = True, pid: str | None = None,
                   body: dict[str, Any] | None = None) -> HTTPResponse:
        url, raw = self.request(path, method, pid=pid, body=body)
        headers = {"Content-Type": "application/json"}
        if client is not None and client.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
            if csrf and client.csrf:
                headers["X-CSRF-Token"] = client.csrf
        response = await self.http.fetch(HTTPRequest(
            self.base_url + url, method=method.upper(), body=raw, headers=headers,
            allow_nonstandard_methods=True), raise_error=False)
        self.check(path, method, response)
        if client is not None:
            for header in response.headers.get_list("Set-Cookie"):
                name, _, rest = header.partition("=")
                value = rest.split(";", 1)[0]
                if value and value != '""':
                    client.cookies[name] = value
        return response

    def check(self, path: str, method: str, response: HTTPResponse) -> None:
        status = str(response.code)
        responses = DOC["paths"][path][method]["responses"]
        assert status in responses, (
            f"{method.upper()} {path} answered {status}, documented: {sorted(responses)}: "
            f"{response.body[:200]!r}")
        documented, pointer = _resolve(_pointer("paths", path, method, "responses", status))
        content_type = response.headers.get("Content-Type", "").split(";")[0]
        assert content_type in documented.get("content", {}), (
            f"{method.upper()} {path} {status}: {content_type} not documented")
        if content_type == "application/json":
            schema_pointer = pointer + _pointer("content", "application/json", "schema")
            # No field the document does not mention.
            validator = Draft202012Validator(
                {"$ref": f"{DOC_URI}#{schema_pointer}", "unevaluatedProperties": False},
                registry=REGISTRY)
            body = json.loads(response.body)
            errors = [e.message for e in validator.iter_errors(body)]
            assert not errors, f"{method.upper()} {path} {status}: {errors} in {body}"
        self.exercised.add((path, method, status))


def _code(response: HTTPResponse) -> int:
    return int(json.loads(response.body)["code"])


async def test_every_operation_answers_as_documented(api_web: Web, accounts: Accounts,
                                                     stores: Stores) -> None:
    check = Checker(api_web.base_url)
    me = Client(api_web.base_url)
    register_example = DOC["paths"]["/account/register"]["post"]["requestBody"]["content"][
        "application/json"]["example"]
    code = await accounts.code("o-openapi-00000000000000001")
    ok = await check.call("/account/register", "post", me, body={"last_name": code})
    assert _code(ok) == 200
    assert _code(await check.call("/account/login", "post", me)) == 200
    assert me.csrf
    assert _code(await check.call("/account/info", "get", me)) == 200
    assert _code(await check.call("/database/add", "post", me)) == 200
    shown = await check.call("/database/show", "get", me)
    assert json.loads(shown.body)["data"] == {"01": {"苹果": "梨子"}, "02": {"*价格": "请看菜单"}}
    assert _code(await check.call("/database/update/", "post", me)) == 200
    assert _code(await check.call("/database/delete/", "get", me)) == 200
    assert _code(await check.call("/database/delete/", "delete", me)) == 200
    assert _code(await check.call("/autoreply/off", "post", me)) == 200
    assert _code(await check.call("/autoreply/on", "post", me)) == 200
    started = await check.call("/wechat/testlogin", "get", me)
    pid = json.loads(started.body)["pid"]
    for path in ("/qr/{pid}", "/qr/{pid}/status", "/static/qrimages/{pid}.png"):
        assert (await check.call(path, "get", None)).code == 404  # the example pid
    assert (await check.call("/static/qrimages/{pid}.png", "get", None, pid=pid)).code == 404
    await QrStore(stores.kv).put_png(pid, b"\x89PNG\r\n\x1a\n")
    for path in ("/qr/{pid}", "/qr/{pid}/status", "/static/qrimages/{pid}.png"):
        assert (await check.call(path, "get", None, pid=pid)).code == 200
    assert (await check.call("/healthz", "get", None)).code == 200
    assert (await check.call("/metrics", "get", None)).code == 200

    # Without a session, and without the CSRF token.
    for path, method in _operations():
        security = DOC["paths"][path][method].get("security", DOC["security"])
        schemes = {name for requirement in security for name in requirement}
        if "session" in schemes:
            answer = await check.call(path, method, Client(api_web.base_url))
            assert answer.code == 401, (path, method)
        if "csrf" in schemes:
            answer = await check.call(path, method, me, csrf=False)
            assert answer.code == 403, (path, method)

    user = await stores.users.by_username(register_example["username"])
    assert user is not None
    reset = await stores.kv.issue_code("reset", str(user.uid))
    assert _code(await check.call("/account/reset", "post", me, body={"code": reset})) == 200
    assert _code(await check.call("/account/logout", "get", me)) == 200
    assert _code(await check.call("/account/logout", "post", me)) == 200

    # Methods the document does not list are not answered.
    for path, item in DOC["paths"].items():
        for method in set(METHODS) - set(item):
            response = await AsyncHTTPClient().fetch(HTTPRequest(
                api_web.base_url + _example_path(path), method=method.upper(),
                body=b"" if method in ("post", "put", "patch") else None,
                allow_nonstandard_methods=True), raise_error=False)
            assert response.code == 405, (method, path, response.code)

    called = {(path, method) for path, method, _ in check.exercised}
    assert called == set(_operations()), set(_operations()) - called


@pytest.mark.parametrize(("path", "method"), [
    ("/account/register", "post"), ("/account/login", "post"), ("/account/reset", "post"),
    ("/database/add", "post"), ("/database/update/", "post"), ("/database/delete/", "get"),
])
async def test_documented_error_answers_match_too(api_web: Web, accounts: Accounts,
                                                  path: str, method: str) -> None:
    """A request with every string field replaced by a number: -4, as documented."""
    check = Checker(api_web.base_url)
    me = await accounts.logged_in("errors")
    operation = DOC["paths"][path][method]
    body = None
    if "requestBody" in operation:
        example = operation["requestBody"]["content"]["application/json"]["example"]
        body = dict.fromkeys(example, 12345)
    url, _ = check.request(path, method)
    if method == "get":
        url = re.sub(r"id=[^&]*", "id=x", url)
    response = await check.http.fetch(HTTPRequest(
        api_web.base_url + url, method=method.upper(),
        body=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json",
                 "Cookie": "; ".join(f"{k}={v}" for k, v in me.cookies.items()),
                 "X-CSRF-Token": me.csrf or ""}), raise_error=False)
    check.check(path, method, response)
    assert _code(response) == -4
