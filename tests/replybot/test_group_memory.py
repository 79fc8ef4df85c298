"""What a session keeps of its groups' member lists (replybot.webwx.contacts.Members).

itchat fetches a group's member list the first time someone in it speaks
(``produce_group_chat`` → ``update_chatroom``) and would keep every member's record; the
driver keeps the owner's own record and the others' UserNames only.  These tests let 20
groups of 200 members speak through the fake and check what is left, that no group is
fetched twice, and that @-mentions (also of a group display name) and replies still work.
"""

from __future__ import annotations

import sys
from typing import Any

from replybot.driver import IncomingMessage
from replybot.webwx.contacts import Members
from sandbox.webwx import FakeAccount, FakeWebWx
from tests.replybot import test_itchat_driver as driver_tests
from tests.replybot.test_itchat_driver import Running, StartFn, qr_login

start = driver_tests.start  # the driver tests' fixture: a driver starter

GROUPS, MEMBERS = 20, 200


def _member_lists(fake: FakeWebWx, account: FakeAccount) -> int:
    (row,) = [s for s in fake.sessions() if s["uin"] == account.uin]
    return int(row["member_lists"])


def _round_done(fake: FakeWebWx, run: Running, account: FakeAccount, text: str) -> None:
    """A friend message after what was pushed: once it is delivered, the previous rounds
    are over and the driver trimmed the contacts (it does so between rounds)."""
    fake.push_friend_text(account, 0, text)
    run.events.wait_message(lambda m: m.text == text)
    fake.push_friend_text(account, 1, text + " again")  # one more round: trim ran
    run.events.wait_message(lambda m: m.text == text + " again")


def _speak_everywhere(fake: FakeWebWx, run: Running, account: FakeAccount) -> None:
    for g in range(GROUPS):
        fake.push_group_text(account, g, (g * 37 + 5) % MEMBERS, f"hello {g}")
    for g in range(GROUPS):
        msg = run.events.wait_message(lambda m, g=g: m.text == f"hello {g}")
        assert msg.is_group
        assert not msg.mentioned
        assert msg.sender == account.member_name(g, (g * 37 + 5) % MEMBERS)
    _round_done(fake, run, account, "round")


def _rooms(run: Running) -> list[Any]:
    return list(run.driver._core.chatroomList)  # white-box: itchat's own structures


def _check_slim(run: Running, account: FakeAccount, members: int) -> None:
    me = account.user_name
    rooms = _rooms(run)
    assert len(rooms) == GROUPS
    for room in rooms:
        member_list = room["MemberList"]
        assert isinstance(member_list, Members)
        assert len(member_list) == members + 1  # the owner and every member
        # The only full record kept is the owner's own, with its group display name.
        assert [m["UserName"] for m in member_list.kept] == [me]
        # (MemberList: the one empty list itchat shares between all member records.)
        assert set(member_list.kept[0]) <= {"UserName", "NickName", "DisplayName",
                                            "MemberList"}
        assert room["Self"] is member_list.kept[0]
        g = next(g for g in range(GROUPS) if account.group_name(g) == room["UserName"])
        assert member_list.names == [account.member_name(g, j) for j in range(members)]
    kept = sum(len(r["MemberList"].kept) for r in rooms)
    assert kept == GROUPS  # 20 member dicts in all, not 20 × 201
    held = sum(sys.getsizeof(r["MemberList"]._names) for r in rooms)
    assert held < GROUPS * members * 40  # about 35 bytes a member (UserName + newline)


def test_groups_that_speak_keep_only_the_owners_record(
        fake_webwx: FakeWebWx, start: StartFn) -> None:
    big = fake_webwx.add_account("Big", friends=5, groups=GROUPS, members=MEMBERS, mps=1)
    run = qr_login(fake_webwx, start, big)
    _speak_everywhere(fake_webwx, run, big)
    assert _member_lists(fake_webwx, big) == GROUPS  # each group fetched once
    _check_slim(run, big, MEMBERS)

    # Another known member speaks: found among the names, no second fetch.
    fake_webwx.push_group_text(big, 3, 150, "known member")
    assert run.events.wait_message(lambda m: m.text == "known member").sender == \
        big.member_name(3, 150)
    # An @-mention of the owner (its nickname: no group display name) is detected and
    # taken off the text.
    fake_webwx.push_group_text(big, 5, 17, "你好", mention_self=True)
    msg: IncomingMessage = run.events.wait_message(lambda m: m.text == "你好")
    assert (msg.mentioned, msg.chat, msg.sender) == (True, big.group_name(5),
                                                     big.member_name(5, 17))
    assert _member_lists(fake_webwx, big) == GROUPS

    # A reply goes out to the group.
    assert run.driver.send_text(big.group_name(5), "在忙")
    assert [(s.to_user, s.text) for s in fake_webwx.sent(big)] == [(big.group_name(5), "在忙")]

    # A member who joined since speaks: itchat fetches the group again (as it must), and
    # the new member is kept as a name too.
    big.members += 1
    fake_webwx.push_group_text(big, 8, MEMBERS, "new here")
    assert run.events.wait_message(lambda m: m.text == "new here").sender == \
        big.member_name(8, MEMBERS)
    assert _member_lists(fake_webwx, big) == GROUPS + 1
    _round_done(fake_webwx, run, big, "after join")
    room = next(r for r in _rooms(run) if r["UserName"] == big.group_name(8))
    assert len(room["MemberList"]) == MEMBERS + 2
    assert [m["UserName"] for m in room["MemberList"].kept] == [big.user_name]
    assert big.member_name(8, MEMBERS) in room["MemberList"].names


def test_a_group_display_name_is_still_what_a_mention_names(
        fake_webwx: FakeWebWx, start: StartFn) -> None:
    shop = fake_webwx.add_account("Shop", friends=5, groups=GROUPS, members=MEMBERS,
                                  mps=1, group_display_name="店长小王")
    run = qr_login(fake_webwx, start, shop)
    _speak_everywhere(fake_webwx, run, shop)
    _check_slim(run, shop, MEMBERS)
    for room in _rooms(run):
        assert room["Self"]["DisplayName"] == "店长小王"

    # "@店长小王\u2005价格" (the display name, not the nickname "Shop").
    fake_webwx.push_group_text(shop, 11, 42, "价格", mention_self=True)
    msg = run.events.wait_message(lambda m: m.text == "价格")
    assert (msg.mentioned, msg.is_group, msg.chat) == (True, True, shop.group_name(11))
    # Without a mention the same text is not one.
    fake_webwx.push_group_text(shop, 11, 43, "价格 plain")
    assert not run.events.wait_message(lambda m: m.text == "价格 plain").mentioned
    assert _member_lists(fake_webwx, shop) == GROUPS


def test_members_behave_as_the_list_itchat_expects() -> None:
    me = {"UserName": "@me", "NickName": "Me", "DisplayName": "店长"}
    members = Members([me], ["@a", "@b", "@c"])
    assert len(members) == 4
    assert members
    assert [m["UserName"] for m in members] == ["@me", "@a", "@b", "@c"]
    found = next(m for m in members if m.get("UserName") == "@b")
    assert (found.get("DisplayName", "") or found["NickName"]) == ""  # ActualNickName
    members.append({"UserName": "@d", "NickName": "D"})  # a merge appends a full record
    assert [m["UserName"] for m in members] == ["@me", "@d", "@a", "@b", "@c"]
    assert (members[1]["NickName"], members[-1]["UserName"]) == ("D", "@c")
    del members[3]  # "@b", as update_local_chatrooms deletes members who left
    assert [m["UserName"] for m in members] == ["@me", "@d", "@a", "@c"]
    del members[0]
    assert [m["UserName"] for m in members] == ["@d", "@a", "@c"]
    assert len(members) == 3
