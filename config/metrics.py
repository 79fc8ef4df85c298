"""Every Prometheus metric wxreply exports, with its help text, in one place.

Each process has one :class:`Metrics` (``PROCESS``) on a registry of its own, not
prometheus_client's global one: tests that build several apps or workers in one process
may give each a fresh ``Metrics()``.  ``/metrics`` (web_min.health) renders it; the
web process and each ``wxreply worker`` (``--metrics-port``) serve their own.

Label values come from fixed sets only.  Never an openid, a uid, a user name, a
nickname or a message: a label value per user would grow the series without bound and
put people's identities in the monitoring system.  Counters start at zero with each
process (Prometheus's ``rate()`` handles the resets).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "PROCESS", "SESSION_STATES", "Metrics"]

# The states a bot session can be in (store.bots.LoginState's values; config imports
# nothing of store, so they are listed here and a test checks they agree).
SESSION_STATES = ("requested", "waiting_scan", "scanned", "online", "logged_out", "refused",
                  "expired", "closed")
# Why a push got no reply of its own (mpbot.edge's refusals).
PUSH_REJECT_REASONS = ("too_large", "not_utf8", "signature", "malformed", "openid_mismatch",
                       "replay")
# Answers to WeChat take at most 4 s (mpbot.edge.ANSWER_BUDGET_S); WeChat waits 5 s.
_ANSWER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 5.0)
_STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0)
_LAG_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0)

SessionCounts = Callable[[], Mapping[str, int]]

# The ``*_created`` series (each counter's creation time) double the output and say
# nothing ``wxreply_process_start_time_seconds`` does not.
disable_created_metrics()


class _Sessions(Collector):
    """``wxreply_bot_sessions{state}``: counted at scrape time from the workers of this
    process (each adds a callable), every state present, 0 included."""

    def __init__(self) -> None:
        self._sources: list[SessionCounts] = []
        self._lock = threading.Lock()

    def add(self, source: SessionCounts) -> None:
        with self._lock:
            self._sources.append(source)

    def remove(self, source: SessionCounts) -> None:
        with self._lock:
            if source in self._sources:
                self._sources.remove(source)

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("wxreply_bot_sessions",
                                   "Bot sessions run by this process, by login state.",
                                   labels=["state"])
        totals = dict.fromkeys(SESSION_STATES, 0)
        with self._lock:
            sources = list(self._sources)
        for source in sources:
            for state, count in source().items():
                if state in totals:
                    totals[state] += count
        for state, count in totals.items():
            family.add_metric([state], count)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        # -- the official account's pushes (mpbot.edge) ----------------------------------
        self.pushes = Counter(
            "wxreply_pushes", "Pushes from WeChat to /wechat by outcome: reply (a text "
            "reply), busy (the busy reply: a store was down or too slow), success (nothing "
            "to say), rejected (4xx; see reason).", ["outcome", "reason"], registry=registry)
        self.answer_seconds = Histogram(
            "wxreply_push_answer_seconds", "Time from a push's arrival to its answer "
            "(accepted pushes only).", buckets=_ANSWER_BUCKETS, registry=registry)
        self.commands = Counter(
            "wxreply_commands", "Commands run from the official account, by command "
            "(English name; other: not a command).", ["command"], registry=registry)
        self.dedup_hits = Counter(
            "wxreply_push_dedup_hits", "WeChat retries answered with the reply of the "
            "push's first delivery (nothing run twice).", registry=registry)
        # -- notices to owners (mpbot.notifier, mpbot.mailbox) --------------------------
        self.notices = Counter(
            "wxreply_notices", "Notices about bot sessions, by channel (customer_service, "
            "mailbox, reply) and result (sent, failed, retry, undeliverable, kept, carried).",
            ["channel", "result"], registry=registry)
        # -- bot sessions (replybot.worker) ---------------------------------------------
        self.sessions = _Sessions()
        registry.register(self.sessions)
        self.logins = Counter(
            "wxreply_bot_logins", "Web WeChat logins by result: started (a QR shown), "
            "succeeded (online), refused (WeChat refused the login), closed (WeChat closed "
            "a session, 1102), expired (the QR was not scanned in time).", ["result"],
            registry=registry)
        self.replies = Counter(
            "wxreply_bot_replies", "Auto-replies by result: sent, or send_failed (WeChat "
            "did not accept it).", ["result"], registry=registry)
        self.suppressed = Counter(
            "wxreply_bot_replies_suppressed", "Auto-replies a rule matched but that were "
            "not sent, by reason: cooldown, loop_guard, paused (the owner wrote by hand), "
            "rate (per-minute limit), restricted (WeChat restricts the account), duplicate "
            "(a message seen before).", ["reason"], registry=registry)
        # -- stores and the bus (store._guard, store.bus) -------------------------------
        self.store_seconds = Histogram(
            "wxreply_store_call_seconds", "Duration of calls to a store (mongodb, redis).",
            ["store"], buckets=_STORE_BUCKETS, registry=registry)
        self.store_errors = Counter(
            "wxreply_store_errors", "Failed store calls by store and kind (unavailable: "
            "the store did not answer; error: it answered with an error).",
            ["store", "kind"], registry=registry)
        self.bus_lag = Histogram(
            "wxreply_bus_lag_seconds", "Time from an entry's publication on the Redis bus "
            "to its first reading, by stream (starts: login commands to workers; events: "
            "session events to the notifiers).", ["stream"], buckets=_LAG_BUCKETS,
            registry=registry)
        self.up = Gauge("wxreply_process_start_time_seconds",
                        "When this process started (Unix time).", registry=registry)
        self.up.set_to_current_time()
        self._prime()

    def _prime(self) -> None:
        """Create the known label sets at 0, so that a rate is 0 rather than absent."""
        for outcome in ("reply", "busy", "success"):
            self.pushes.labels(outcome, "")
        for reason in PUSH_REJECT_REASONS:
            self.pushes.labels("rejected", reason)
        for result in ("started", "succeeded", "refused", "closed", "expired"):
            self.logins.labels(result)
        for result in ("sent", "send_failed"):
            self.replies.labels(result)
        for reason in ("cooldown", "loop_guard", "paused", "rate", "restricted", "duplicate"):
            self.suppressed.labels(reason)
        for channel, result in (("customer_service", "sent"), ("customer_service", "failed"),
                                ("customer_service", "retry"),
                                ("customer_service", "undeliverable"), ("mailbox", "kept"),
                                ("reply", "carried")):
            self.notices.labels(channel, result)
        for store in ("mongodb", "redis"):
            self.store_seconds.labels(store)
            for kind in ("unavailable", "error"):
                self.store_errors.labels(store, kind)
        for stream in ("starts", "events"):
            self.bus_lag.labels(stream)

    def render(self) -> bytes:
        """The text exposition format (``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.registry)


PROCESS = Metrics()
