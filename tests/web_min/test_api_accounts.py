"""/account/*: register with a one-time code, login, logout, reset, info; every code."""

from __future__ import annotations

import bcrypt
import pytest

from store import Stores
from tests.conftest import Chat
from tests.web_min.conftest import PASSWORD, Accounts, Client

OPENID = "o-alice-000000000000000001"


async def test_register_with_a_code_from_the_chat_then_login(client: Client, chat: Chat,
                                                             stores: Stores) -> None:
    reply = await chat("验证码", OPENID)
    code = reply.split("：", 1)[1].split("（", 1)[0]  # "1000-483920", as shown
    answer = await client.post("/account/register", json_body={
        "username": "Alice", "password": PASSWORD, "last_name": code})
    assert answer.status == 200
    assert answer.body["code"] == 200
    assert answer.body["message"] == "ok"
    user = await stores.users.by_openid(OPENID)
    assert user is not None
    assert answer.body["data"] == {"userid": user.uid, "username": "alice"}
    assert user.username == "alice"  # stored case-folded: Alice and alice are one name
    assert user.password_hash is not None
    assert user.password_hash != PASSWORD.encode()
    assert bcrypt.checkpw(PASSWORD.encode(), user.password_hash)

    login = await client.post("/account/login",
                              json_body={"username": "ALICE", "password": PASSWORD})
    assert login.body["code"] == 200
    assert login.body["data"] == {"userid": user.uid, "username": "alice"}
    assert login.body["csrf_token"] == client.csrf
    info = await client.get("/account/info")
    assert info.body["data"]["openid"] == OPENID
    # The chat now knows the account, too.
    assert await chat("验证码", OPENID) == (
        "你已绑定 API 账号「alice」。忘记密码请发送「重置密码」。")


async def test_register_accepts_a_form_body(client: Client, accounts: Accounts,
                                            stores: Stores) -> None:
    code = await accounts.code("o-form-000000000000000000001")
    answer = await client.post("/account/register", form={
        "username": "小明_01", "password": "密码密码密码密码", "last_name": code})
    assert answer.body["code"] == 200, answer.body
    user = await stores.users.by_username("小明_01")
    assert user is not None
    assert user.openid == "o-form-000000000000000000001"
    login = await client.post("/account/login",
                              form={"username": "小明_01", "password": "密码密码密码密码"})
    assert login.body["code"] == 200


@pytest.mark.parametrize("code", ["000000", "12345", "abcdef", "", "1234567", "１２３４５６"])
async def test_register_with_a_wrong_code_is_minus_1(client: Client, stores: Stores,
                                                     code: str) -> None:
    answer = await client.post("/account/register", json_body={
        "username": "bob", "password": PASSWORD, "last_name": code})
    assert answer.status == 200
    assert answer.code == -1
    assert "验证码" in answer.body["message"]
    assert await stores.users.by_username("bob") is None


async def test_a_code_works_once_and_only_for_its_purpose(client: Client, accounts: Accounts,
                                                          stores: Stores) -> None:
    user, _ = await stores.users.get_or_create("o-carol-0000000000000000001")
    reset_code = await stores.kv.issue_code("reset", str(user.uid))
    wrong_purpose = await client.post("/account/register", json_body={
        "username": "carol", "password": PASSWORD, "last_name": f"{user.uid}-{reset_code}"})
    assert wrong_purpose.code == -1

    code = await accounts.code("o-carol-0000000000000000001")
    first = await client.post("/account/register", json_body={
        "username": "carol", "password": PASSWORD, "last_name": code})
    assert first.code == 200
    again = await client.post("/account/register", json_body={
        "username": "carol2", "password": PASSWORD, "last_name": code})
    assert again.code == -1
    assert await stores.users.by_username("carol2") is None


async def test_username_taken_is_minus_2_and_keeps_the_code(client: Client, accounts: Accounts,
                                                            stores: Stores) -> None:
    await accounts.register("dave")
    code = await accounts.code("o-eve-00000000000000000001")
    taken = await client.post("/account/register", json_body={
        "username": "Dave", "password": PASSWORD, "last_name": code})
    assert taken.code == -2
    assert "已被使用" in taken.body["message"]
    # The code was not spent on a name that could not be had.
    ok = await client.post("/account/register", json_body={
        "username": "eve", "password": PASSWORD, "last_name": code})
    assert ok.code == 200


async def test_one_wechat_binds_one_account(client: Client, accounts: Accounts,
                                            stores: Stores) -> None:
    openid = "o-frank-0000000000000000001"
    uid = await accounts.register("frank", openid=openid)
    # 验证码 refuses once bound, but a code issued before the first registration used
    # it is still refused here.
    code = await stores.kv.issue_code("register", openid)
    answer = await client.post("/account/register", json_body={
        "username": "frank2", "password": PASSWORD, "last_name": f"{uid}-{code}"})
    assert answer.code == -2
    assert "已经绑定" in answer.body["message"]
    assert await stores.users.by_username("frank2") is None


@pytest.mark.parametrize(("field", "value", "says"), [
    ("username", "ab", "3-32"),
    ("username", "a" * 33, "3-32"),
    ("username", "bad name", "只能包含"),
    ("username", "<script>", "只能包含"),
    ("password", "short", "至少 8"),
    ("password", "长" * 25, "最多 72 字节"),
    ("password", "tab\there1", "控制字符"),
])
async def test_register_rejects_bad_credentials_with_minus_4(
        client: Client, accounts: Accounts, stores: Stores, field: str, value: str,
        says: str) -> None:
    body = {"username": "grace", "password": PASSWORD,
            "last_name": await accounts.code("o-grace-000000000000000001")}
    body[field] = value
    answer = await client.post("/account/register", json_body=body)
    assert answer.code == -4
    assert says in answer.body["message"]
    assert answer.body["message"].startswith("参数错误：")
    # The code was not used up by a request that could not succeed.
    body[field] = {"username": "grace", "password": PASSWORD}[field]
    assert (await client.post("/account/register", json_body=body)).code == 200


@pytest.mark.parametrize("missing", ["username", "password", "last_name"])
async def test_register_names_a_missing_field(client: Client, missing: str) -> None:
    body = {"username": "heidi", "password": PASSWORD, "last_name": "123456"}
    del body[missing]
    answer = await client.post("/account/register", json_body=body)
    assert answer.code == -4
    assert f"缺少参数 {missing}" in answer.body["message"]


# -- login --------------------------------------------------------------------------


async def test_wrong_password_and_unknown_user_are_minus_3(client: Client,
                                                           accounts: Accounts) -> None:
    await accounts.register("ivan")
    wrong = await client.post("/account/login",
                              json_body={"username": "ivan", "password": "wrong password"})
    assert (wrong.status, wrong.code) == (200, -3)
    assert wrong.body["message"] == "用户名或密码错误"
    unknown = await client.post("/account/login",
                                json_body={"username": "nobody", "password": PASSWORD})
    assert (unknown.status, unknown.body) == (200, wrong.body)  # no hint which one
    assert client.cookies == {}
    assert wrong.cookie("wxr_session") is None


async def test_login_cookie_flags(client: Client, accounts: Accounts) -> None:
    await accounts.register("judy")
    login = await client.post("/account/login",
                              json_body={"username": "judy", "password": PASSWORD})
    session = login.cookie("wxr_session")
    assert session is not None
    flags = [part.strip().lower() for part in session.split(";")]
    assert "httponly" in flags
    assert "samesite=lax" in flags
    assert "path=/" in flags
    assert "secure" not in flags  # WXR_PUBLIC_URL is http here
    csrf = login.cookie("csrftoken")
    assert csrf is not None
    assert "httponly" not in csrf.lower()  # the page's own script echoes it
    assert "samesite=lax" in csrf.lower()


async def test_each_login_is_a_new_session(accounts: Accounts, new_client: object) -> None:
    first = await accounts.logged_in("ken")
    second = new_client()  # type: ignore[operator]
    await second.post("/account/login", json_body={"username": "ken", "password": PASSWORD})
    assert first.cookies["wxr_session"] != second.cookies["wxr_session"]
    assert first.csrf != second.csrf
    assert (await first.get("/account/info")).code == 200
    assert (await second.get("/account/info")).code == 200


async def test_logout_ends_the_session_on_the_server(accounts: Accounts) -> None:
    browser = await accounts.logged_in("leo")
    stolen = dict(browser.cookies)
    out = await browser.get("/account/logout")
    assert out.body == {"code": 200, "message": "ok"}
    cleared = out.cookie("wxr_session")
    assert cleared is not None
    assert cleared.startswith('wxr_session="";')  # emptied and dated in the past
    assert browser.cookies == {}
    again = await browser.get("/account/info")
    assert (again.status, again.code) == (401, -3)
    # A copy of the old cookie is worth nothing either: the session is gone server-side.
    browser.cookies = stolen
    assert (await browser.get("/account/info")).status == 401
    # Logging out twice is fine.
    assert (await browser.get("/account/logout")).code == 200


async def test_a_tampered_session_cookie_is_not_logged_in(accounts: Accounts) -> None:
    browser = await accounts.logged_in("mia")
    value = browser.cookies["wxr_session"]
    browser.cookies["wxr_session"] = value[:-2] + ("AA" if value[-2:] != "AA" else "BB")
    answer = await browser.get("/account/info")
    assert (answer.status, answer.code) == (401, -3)


# -- info -----------------------------------------------------------------------------


async def test_info_shows_who_i_am(accounts: Accounts, stores: Stores) -> None:
    browser = await accounts.logged_in("nina")
    user = await stores.users.by_username("nina")
    assert user is not None
    await stores.users.set_profile(user.uid, nickname="妮娜", email="nina@example.com")
    info = await browser.get("/account/info")
    assert info.body == {"code": 200, "message": "ok", "data": {
        "userid": user.uid, "username": "nina", "openid": user.openid, "nickname": "妮娜",
        "wechat_name": "", "email": "nina@example.com", "autoreply": True, "rule_count": 0,
        "bot": {"state": "none", "nickname": "", "replies_today": 0}}}
    assert user.uid >= 1000


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/account/info"), ("GET", "/database/show"), ("POST", "/database/add"),
    ("GET", "/database/delete/?id=1"), ("DELETE", "/database/delete/?id=1"),
    ("POST", "/database/update/?id=1"), ("POST", "/autoreply/on"),
    ("POST", "/autoreply/off"), ("GET", "/wechat/testlogin"),
])
async def test_everything_else_needs_a_login(client: Client, method: str, path: str) -> None:
    answer = await client.call(method, path, json_body={"苹果": "梨子"} if method == "POST"
                               else None)
    assert answer.status == 401
    assert answer.code == -3
    assert "登录" in answer.body["message"]


# -- reset ----------------------------------------------------------------------------


async def test_reset_with_the_code_from_the_chat(client: Client, chat: Chat, accounts: Accounts,
                                                 new_client: object) -> None:
    openid = "o-oscar-0000000000000000001"
    await accounts.register("oscar", openid=openid)
    other_browser = new_client()  # type: ignore[operator]
    await other_browser.post("/account/login",
                             json_body={"username": "oscar", "password": PASSWORD})
    reply = await chat("重置密码", openid)
    assert "oscar" in reply
    code = reply.split("：", 1)[1][:6]
    answer = await client.post("/account/reset", json_body={
        "username": "oscar", "code": code, "password": "a brand new secret"})
    assert answer.body == {"code": 200, "message": "ok"}
    old = await client.post("/account/login",
                            json_body={"username": "oscar", "password": PASSWORD})
    assert old.code == -3
    new = await client.post("/account/login",
                            json_body={"username": "oscar", "password": "a brand new secret"})
    assert new.code == 200
    # Whoever was logged in with the old password is out.
    assert (await other_browser.get("/account/info")).status == 401
    # The code is used up.
    again = await client.post("/account/reset", json_body={
        "username": "oscar", "code": code, "password": "yet another secret"})
    assert again.code == -1


async def test_reset_codes_belong_to_one_user(client: Client, accounts: Accounts,
                                              stores: Stores) -> None:
    pat = await accounts.register("pat")
    await accounts.register("quinn")
    pats_code = await stores.kv.issue_code("reset", str(pat))
    answer = await client.post("/account/reset", json_body={
        "username": "quinn", "code": pats_code, "password": "quinn takes over"})
    assert answer.code == -1
    # Pat's code was not burnt by Quinn's attempt: Pat can still use it.
    mine = await client.post("/account/reset", json_body={
        "username": "pat", "code": pats_code, "password": "pat's new secret"})
    assert mine.code == 200


async def test_reset_errors(client: Client, accounts: Accounts) -> None:
    await accounts.register("rita")
    unknown = await client.post("/account/reset", json_body={
        "username": "nobody", "code": "123456", "password": "whatever123"})
    assert unknown.code == -1  # the same answer as a wrong code: no list of usernames
    bad_code = await client.post("/account/reset", json_body={
        "username": "rita", "code": "123456", "password": "whatever123"})
    assert bad_code.code == -1
    assert bad_code.body == unknown.body
    weak = await client.post("/account/reset", json_body={
        "username": "rita", "code": "123456", "password": "short"})
    assert weak.code == -4
    missing = await client.post("/account/reset", json_body={"username": "rita"})
    assert missing.code == -4


async def test_only_post_where_the_original_says_post(client: Client) -> None:
    answer = await client.get("/account/register")
    assert answer.status == 405
    assert answer.code == -4
    assert answer.response.headers["Allow"] == "POST"
    put = await client.call("PUT", "/account/login", raw=b"{}")
    assert put.status == 405
