"""Rule matching: priority, normalisation, the compiled matcher against the naive oracle,
and the per-user cache.  Pure code: no servers needed."""

from __future__ import annotations

import asyncio
import itertools
import random
import sys
import threading
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replybot.matching import Matcher, MatcherCache, NaiveMatcher, compile_rules, naive_match
from store.models import MatchMode, Rule

EXACT = MatchMode.EXACT
CONTAINS = MatchMode.CONTAINS


def rule(number: int, keyword: str, mode: MatchMode = EXACT, uid: int = 1) -> Rule:
    return Rule(uid=uid, number=number, keyword=keyword, reply=f"reply {number}", mode=mode)


def both(rules: Sequence[Rule], text: str) -> Rule | None:
    """Match with the compiled matcher and the naive scan; they must agree."""
    compiled = compile_rules(rules).match(text)
    assert compiled == naive_match(rules, text)
    return compiled


def number(found: Rule | None) -> int | None:
    return None if found is None else found.number


# -- priority --------------------------------------------------------------------------

PRIORITY_CASES = [
    pytest.param([rule(5, "价格"), rule(1, "价格", CONTAINS)], "价格", 5,
                 id="exact-beats-contains-of-same-keyword-and-lower-number"),
    pytest.param([rule(9, "hi"), rule(1, "h", CONTAINS), rule(2, "hi", CONTAINS)], "hi", 9,
                 id="exact-beats-every-contains"),
    pytest.param([rule(1, "苹果", CONTAINS), rule(2, "苹果手机", CONTAINS)], "我想买苹果手机", 2,
                 id="longer-contains-beats-shorter"),
    pytest.param([rule(3, "ab", CONTAINS), rule(2, "cd", CONTAINS)], "abcd", 2,
                 id="equal-length-lower-number-wins"),
    pytest.param([rule(4, "ABC"), rule(2, "abc")], "abc", 2,
                 id="exact-keywords-equal-after-normalising-lower-number-wins"),
    pytest.param([rule(7, "Price", CONTAINS), rule(3, "price", CONTAINS)], "the PRICE?", 3,
                 id="contains-keywords-equal-after-normalising-lower-number-wins"),
    pytest.param([rule(1, "在", CONTAINS)], "在开会", 1, id="single-character-contains"),
    pytest.param([rule(1, "开会"), rule(2, "会", CONTAINS)], "在开会", 2,
                 id="exact-needs-the-whole-text"),
]


@pytest.mark.parametrize(("rules", "text", "expected"), PRIORITY_CASES)
def test_priority(rules: list[Rule], text: str, expected: int | None) -> None:
    assert number(both(rules, text)) == expected


OVERLAP_CASES = [
    pytest.param([rule(3, "abc", CONTAINS), rule(1, "bcd", CONTAINS), rule(2, "cde", CONTAINS)],
                 "abcde", 1, id="three-overlapping-equal-length"),
    pytest.param([rule(1, "ab", CONTAINS), rule(2, "abc", CONTAINS)], "xabcx", 2,
                 id="nested-prefix"),
    pytest.param([rule(1, "bc", CONTAINS), rule(2, "abc", CONTAINS)], "abc", 2,
                 id="nested-suffix"),
    # A leftmost-longest scan takes "ab" and resumes at "c", missing the longer "bcde".
    pytest.param([rule(1, "ab", CONTAINS), rule(2, "bcde", CONTAINS)], "abcde", 2,
                 id="longer-overlap-starting-later"),
    pytest.param([rule(2, "aa", CONTAINS), rule(1, "aaa", CONTAINS)], "aaaa", 1,
                 id="self-overlapping"),
    pytest.param([rule(1, "回复", CONTAINS), rule(2, "稍后回复", CONTAINS),
                  rule(3, "后回", CONTAINS)], "在开会，稍后回复", 2, id="cjk-overlap"),
]


@pytest.mark.parametrize(("rules", "text", "expected"), OVERLAP_CASES)
def test_overlapping_contains(rules: list[Rule], text: str, expected: int) -> None:
    assert number(both(rules, text)) == expected


def test_keyword_equal_to_whole_text_is_both_exact_and_contains() -> None:
    # The store allows one exact and one contains rule with the same keyword.
    exact, contains = rule(2, "地址"), rule(1, "地址", CONTAINS)
    assert both([contains], "地址") == contains
    assert both([exact], "地址") == exact
    assert both([contains, exact], "地址") == exact
    assert both([contains, exact], "店的地址") == contains


@pytest.mark.parametrize("mode", list(MatchMode))
def test_full_tie_keeps_the_rule_given_first(mode: MatchMode) -> None:
    # The store never holds two rules with one number; if a caller passes them anyway the
    # answer is still deterministic, and the same in both implementations.
    first, second = rule(3, "A", mode), rule(3, "a", mode)
    assert both([first, second], "a") is first
    assert both([second, first], "a") is second


# -- normalisation ---------------------------------------------------------------------

NORMALISATION_CASES = [
    pytest.param("ＡＢＣ１", "abc1", id="full-width-keyword"),
    pytest.param("abc1", "ＡＢＣ１", id="full-width-text"),
    pytest.param("Hello", "hELLO", id="case"),
    pytest.param("straße", "STRASSE", id="casefold-not-lower"),
    pytest.param("hello", "  hello \n", id="surrounding-space"),
    pytest.param("你好", "\u3000你好\u3000", id="ideographic-space"),
    pytest.param("  hi  ", "hi", id="keyword-spaces"),
    pytest.param("ｶﾀｶﾅ", "カタカナ", id="half-width-katakana"),
]


@pytest.mark.parametrize(("keyword", "text"), NORMALISATION_CASES)
def test_normalisation_exact(keyword: str, text: str) -> None:
    assert number(both([rule(1, keyword)], text)) == 1


@pytest.mark.parametrize(("keyword", "text"), NORMALISATION_CASES)
def test_normalisation_contains(keyword: str, text: str) -> None:
    found = both([rule(1, keyword, CONTAINS)], f"请问 {text.strip()} 呢")
    assert number(found) == 1


def test_length_is_counted_after_normalising() -> None:
    # "ßx" is two characters as typed but "ssx", three, once casefolded: it is the longer
    # keyword, although the raw lengths tie and the lower number would pick rule 1.
    rules = [rule(1, "sx", CONTAINS), rule(2, "ßx", CONTAINS)]
    assert number(both(rules, "STRASSX")) == 2


# -- scripts and emoji -----------------------------------------------------------------


@pytest.mark.parametrize(("rules", "text", "expected"), [
    pytest.param([rule(1, "🎁", CONTAINS)], "送你一个🎁哦", 1, id="emoji-contains"),
    pytest.param([rule(1, "生日快乐🎂")], "生日快乐🎂", 1, id="emoji-exact"),
    pytest.param([rule(1, "🎂"), rule(2, "🎂", CONTAINS)], "🎂🎂", 2, id="emoji-repeated"),
    pytest.param([rule(1, "ok👍", CONTAINS), rule(2, "👍", CONTAINS)], "OK👍 thanks", 1,
                 id="emoji-ascii-mixed"),
    pytest.param([rule(1, "😀a", CONTAINS)], "x😀ab", 1, id="astral-then-ascii"),
    pytest.param([rule(1, "iPhone价格", CONTAINS)], "请问IPHONE价格多少", 1, id="cjk-ascii-mixed"),
    pytest.param([rule(1, "价格", CONTAINS)], "价钱", None, id="cjk-no-match"),
])
def test_scripts(rules: list[Rule], text: str, expected: int | None) -> None:
    assert number(both(rules, text)) == expected


# -- nothing to match ------------------------------------------------------------------


def test_no_rules_match_nothing() -> None:
    matcher = compile_rules([])
    assert matcher.match("hello") is None
    assert len(matcher) == 0
    assert naive_match([], "hello") is None


@pytest.mark.parametrize("text", ["", " ", "\u3000\t\n"])
def test_empty_text_matches_nothing(text: str) -> None:
    rules = [rule(1, "a", CONTAINS), rule(2, "b")]
    assert both(rules, text) is None


def test_blank_keyword_matches_nothing() -> None:
    # An empty contains keyword would be "in" every message.
    rules = [rule(1, "   ", CONTAINS), rule(2, "\u3000"), rule(3, "", CONTAINS)]
    assert both(rules, "anything") is None
    assert len(compile_rules(rules)) == 0


def test_rules_may_be_a_one_shot_iterable() -> None:
    rules = [rule(1, "a", CONTAINS), rule(2, "b")]
    assert number(compile_rules(iter(rules)).match("b")) == 2


def test_one_mode_only_builds_only_its_part() -> None:
    # Memory: most users have a few rules of one mode; no automaton without contains rules.
    assert compile_rules([rule(1, "a"), rule(2, "b")])._automaton is None
    assert compile_rules([rule(1, "a", CONTAINS)])._exact is None


def test_mode_given_as_plain_string() -> None:
    # MatchMode is a StrEnum: a caller that builds a Rule from a document's "mode" string
    # must get the same answer as with the enum member.
    rules = [Rule(uid=1, number=1, keyword="hi", reply="r", mode="exact"),  # type: ignore[arg-type]
             Rule(uid=1, number=2, keyword="h", reply="r", mode="contains")]  # type: ignore[arg-type]
    assert number(both(rules, "hi")) == 1
    assert number(both(rules, "oh")) == 2


def test_matcher_counts_distinct_keywords() -> None:
    matcher = compile_rules([rule(1, "a"), rule(2, "A"), rule(3, "a", CONTAINS), rule(4, "b")])
    assert len(matcher) == 3
    assert repr(matcher) == "<Matcher exact=2 contains=1>"


# -- compiled == naive, for generated rule sets ----------------------------------------

# Mostly two letters, so that keywords overlap and texts hit them often; now and then a
# full-width letter, an upper-case one, "ß" (two letters once casefolded), a space, CJK
# or an astral emoji.
_CHARS = st.sampled_from("ab") | st.sampled_from("ab") | st.sampled_from("Aß Ｂ好😀")
_keywords = st.text(_CHARS, max_size=4)
_AB_TEXTS = ["".join(letters) for size in range(1, 7)
             for letters in itertools.product("ab", repeat=size)]
_rules = st.lists(
    st.tuples(_keywords, st.sampled_from(MatchMode), st.integers(1, 6)),
    max_size=8,
).map(lambda items: [rule(n, kw, mode) for kw, mode, n in items])


@settings(max_examples=300, deadline=None, database=None)
@given(rules=_rules, data=st.data())
def test_compiled_agrees_with_naive(rules: list[Rule], data: st.DataObject) -> None:
    pieces = st.text(_CHARS, max_size=2)
    if rules:
        pieces = st.sampled_from([r.keyword for r in rules]) | pieces
    texts = data.draw(st.lists(st.lists(pieces, max_size=4).map("".join), min_size=1,
                               max_size=6))
    matcher = compile_rules(rules)
    naive = NaiveMatcher(rules)
    # Every short text over the two common letters as well: that is where overlapping
    # keywords hide each other, and checking them all costs well under a millisecond.
    for text in [*texts, *_AB_TEXTS]:
        assert matcher.match(text) == naive.match(text), text


# -- cache -----------------------------------------------------------------------------


def test_cache_get_put_invalidate() -> None:
    cache = MatcherCache(max_entries=4)
    matcher = compile_rules([rule(1, "a")])
    assert cache.get(1) is None
    assert cache.put(1, matcher)
    assert cache.get(1) is matcher
    cache.invalidate(1)
    assert cache.get(1) is None
    cache.invalidate(99)  # unknown uid: nothing to forget
    assert len(cache) == 0


def test_cache_drops_least_recently_used() -> None:
    cache = MatcherCache(max_entries=2)
    m1, m2, m3 = (compile_rules([rule(1, "x")]) for _ in range(3))
    cache.put(1, m1)
    cache.put(2, m2)
    assert cache.get(1) is m1  # 1 is now more recent than 2
    cache.put(3, m3)
    assert cache.get(2) is None
    assert cache.get(1) is m1
    assert cache.get(3) is m3
    assert len(cache) == 2


def test_cache_put_replaces_and_refreshes() -> None:
    cache = MatcherCache(max_entries=2)
    old, new, other, third = (compile_rules([rule(1, "x")]) for _ in range(4))
    cache.put(1, old)
    cache.put(2, other)
    cache.put(1, new)  # replaces and makes 1 the most recent
    cache.put(3, third)
    assert cache.get(1) is new
    assert cache.get(2) is None


def test_cache_drops_put_of_rules_changed_while_compiling() -> None:
    cache = MatcherCache()
    stale = compile_rules([rule(1, "old")])
    stamp = cache.stamp()  # the session takes a stamp, then loads the rules …
    cache.invalidate(7)  # … the user edits a rule meanwhile …
    assert not cache.put(7, stale, stamp=stamp)  # … so the compiled result is stale
    assert cache.get(7) is None
    fresh = compile_rules([rule(1, "new")])
    assert cache.put(7, fresh, stamp=cache.stamp())
    assert cache.get(7) is fresh


def test_cache_stamp_ignores_other_users_changes() -> None:
    cache = MatcherCache()
    stamp = cache.stamp()
    cache.invalidate(8)
    matcher = compile_rules([rule(1, "a")])
    assert cache.put(7, matcher, stamp=stamp)
    assert cache.get(7) is matcher


def test_cache_forgotten_invalidations_drop_older_puts() -> None:
    # Only max_entries invalidations are remembered; a put older than a forgotten one
    # cannot be proven fresh, so it is dropped (the next get recompiles).
    cache = MatcherCache(max_entries=2)
    stamp = cache.stamp()
    for uid in (1, 2, 3):
        cache.invalidate(uid)
    matcher = compile_rules([rule(1, "a")])
    assert not cache.put(1, matcher, stamp=stamp)
    assert cache.put(1, matcher, stamp=cache.stamp())


def test_cache_rejects_zero_size() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MatcherCache(max_entries=0)


def test_cache_concurrent_threads_and_asyncio_invalidation() -> None:
    """Session threads get and put while an asyncio task invalidates, as in a worker."""
    cache = MatcherCache(max_entries=16)
    uids = range(40)
    own: dict[int, Matcher] = {uid: compile_rules([rule(1, f"k{uid}", uid=uid)]) for uid in uids}
    errors: list[BaseException] = []
    stop = threading.Event()

    def session(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(3000):
                uid = rng.choice(uids)
                found = cache.get(uid)
                if found is None:
                    cache.put(uid, own[uid], stamp=cache.stamp())
                else:
                    # Never another user's matcher, never a torn entry.
                    assert found is own[uid]
                    assert number(found.match(f"k{uid}")) == 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    async def invalidator() -> int:
        rng = random.Random(0)
        count = 0
        while not stop.is_set():
            cache.invalidate(rng.choice(uids))
            count += 1
            await asyncio.sleep(0)
        return count

    async def scenario() -> int:
        threads = [threading.Thread(target=session, args=(seed,)) for seed in range(8)]
        task = asyncio.create_task(invalidator())
        for thread in threads:
            thread.start()
        await asyncio.to_thread(lambda: [t.join() for t in threads])
        stop.set()
        return await task

    # Switch threads far more often than the default 5 ms, so that the operations
    # interleave instead of each thread running its whole loop in one slice.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        invalidations = asyncio.run(scenario())
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    assert invalidations > 0
    assert len(cache) <= 16


# -- benchmark -------------------------------------------------------------------------


def test_bench_quick_run_reports_and_agrees() -> None:
    # Shape and agreement only; timing belongs to `python -m bench.matching`.
    from bench.matching import run

    result = run(quick=True)
    assert result["rules"] == 10_000
    assert result["agree"] is True
    for key in ("messages", "compiled_us", "naive_us", "ratio", "compile_ms", "target_met"):
        assert key in result
    memory = result["memory_bytes"]
    assert isinstance(memory, dict)
    assert set(memory) == {0, 10, 200, 10_000}
    hits = result["hits"]
    assert isinstance(hits, dict)
    assert hits["exact"] > 0
    assert hits["contains"] > 0
    assert hits["none"] > hits["contains"]
