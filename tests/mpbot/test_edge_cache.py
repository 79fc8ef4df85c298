"""The official-account hot path: ``列表`` answered from cached rules with one Redis round
trip and no MongoDB query, and correct across several web processes whatever writes the
rules (chat commands, the JSON API's repository calls, another process)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring
from redis.asyncio import Redis

from config import Settings
from mpbot.simulator import Simulator
from store import MatchMode, Stores
from store.stores import MONGO_OPTIONS, REDIS_OPTIONS
from tests.conftest import Servers, Web, start_web
from wxreply.app import build_app

OPENID = "o-cache-00000000000000000001"


class Commands(monitoring.CommandListener):
    """Every MongoDB command a client sends (pymongo's own monitoring API)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@dataclasses.dataclass
class Process:
    """One web process: its own stores clients (and caches) and its own server."""

    stores: Stores
    web: Web
    mongo_commands: Commands
    say: Callable[..., Coroutine[Any, Any, str]]


@pytest.fixture
async def processes(servers: Servers, namespace: str,
                    safe_settings: Settings) -> AsyncIterator[list[Process]]:
    made: list[Process] = []
    servers_up = []
    for _ in range(2):
        listener = Commands()
        mongo: AsyncMongoClient = AsyncMongoClient(servers.mongo_url, event_listeners=[listener],
                                                   **MONGO_OPTIONS)
        redis = Redis.from_url(servers.redis_url, **REDIS_OPTIONS)
        stores = Stores(mongo, namespace, redis, prefix=f"{namespace}:")
        await stores.ensure_indexes()
        web, server = await start_web(build_app(safe_settings, stores))
        sim = Simulator(f"{web.base_url}/wechat", safe_settings.mp_token,
                        safe_settings.mp_aes_key, safe_settings.mp_appid)

        async def say(text: str, sim: Simulator = sim) -> str:
            delivery = await sim.send(text, OPENID)
            assert delivery.status == 200, delivery.raw
            return delivery.text

        made.append(Process(stores, web, listener, say))
        servers_up.append(server)
    try:
        yield made
    finally:
        for server in servers_up:
            server.stop()
        await made[0].stores.mongo.drop_database(namespace)
        for process in made:
            await process.stores.close()


async def test_rule_changes_in_one_process_show_in_the_other(processes: list[Process]) -> None:
    a, b = processes
    assert await b.say("列表") == "你还没有规则。添加一条试试：添加 苹果 梨子"
    assert (await a.say("添加 苹果 梨子")).startswith("已添加 01")
    assert "01 苹果 → 梨子" in await b.say("列表")
    assert (await b.say("修改 01 樱桃")).startswith("已修改 01")
    assert "01 苹果 → 樱桃" in await a.say("列表")
    assert "01 苹果 → 樱桃" in await b.say("列表")
    assert (await a.say("删除 01")).startswith("已删除 01")
    assert await b.say("列表") == "你还没有规则。添加一条试试：添加 苹果 梨子"


async def test_writes_that_bypass_the_chat_reach_every_cache(processes: list[Process]) -> None:
    # The JSON API and scripts write through RuleRepo too; they never tell the edge.
    a, b = processes
    await a.say("添加 苹果 梨子")
    await a.say("列表")
    await b.say("列表")
    user = await a.stores.users.by_openid(OPENID)
    assert user is not None
    await a.stores.rules.add_many(user.uid, [("香蕉", "橘子", MatchMode.CONTAINS)])
    assert "02 *香蕉（包含） → 橘子" in await a.say("列表")
    assert "02 *香蕉（包含） → 橘子" in await b.say("列表")


async def test_list_in_the_steady_state_makes_no_mongodb_query(processes: list[Process]) -> None:
    a, _ = processes
    for i in range(12):
        await a.say(f"添加 关键词{i} 回复{i}")
    await a.say("列表")  # fills the caches
    a.mongo_commands.names.clear()
    replies = {await a.say("列表") for _ in range(10)}
    page_two = await a.say("列表 2")
    assert a.mongo_commands.names == []
    (reply,) = replies
    assert reply.startswith("你的规则（共 12 条，第 1/2 页）：")
    assert reply.endswith("下一页：列表 2")
    assert page_two.startswith("你的规则（共 12 条，第 2/2 页）：")
    assert await a.say("帮助") == await a.say("help")
    assert a.mongo_commands.names == []


async def test_a_retry_of_a_cached_answer_gets_the_same_reply(processes: list[Process],
                                                             safe_settings: Settings) -> None:
    a, b = processes
    await a.say("添加 苹果 梨子")
    await a.say("列表")
    sim = Simulator(f"{a.web.base_url}/wechat", safe_settings.mp_token,
                    safe_settings.mp_aes_key, safe_settings.mp_appid)
    push = sim.prepare(OPENID, "列表")
    first, *retries = await sim.send_times(push, 3)
    assert first.text.startswith("你的规则（共 1 条）")
    assert {d.text for d in retries} == {first.text}
    # The same push through the other process (another web behind nginx): same reply.
    other = Simulator(f"{b.web.base_url}/wechat", safe_settings.mp_token,
                      safe_settings.mp_aes_key, safe_settings.mp_appid)
    assert (await other.post(push)).text == first.text
    # Its nonce with another message is a replay.
    forged = sim.prepare(OPENID, "列表", nonce=push.url.split("nonce=")[1].split("&")[0])
    assert (await sim.post(forged)).status == 403
