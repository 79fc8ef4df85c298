"""Benchmark: compiled rule matching against the naive scan, in the same run.

Target: 10,000 rules for one user (exact and contains, CJK and ASCII) matched in at most
10 µs per message and at least 50 times faster than a scan over all rules.  The naive
baseline is :class:`replybot.matching.NaiveMatcher`, whose keywords are normalised once up
front, so the ratio measures the algorithm, not repeated normalisation.

Run ``python -m bench.matching [--quick]``; ``run(quick)`` returns the figures for a
combined ``make bench`` table.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
import tracemalloc
from collections.abc import Callable, Sequence

from replybot.matching import Matcher, NaiveMatcher, compile_rules
from store.models import MatchMode, Rule, normalize_keyword

TARGET_US = 10.0
TARGET_RATIO = 50.0
RULES = 10_000
SEED = 20240611

# Messages are drawn from the most common characters of everyday chat; keywords mostly
# from a wider pool of the nouns and terms people set rules for (goods, places, services),
# plus product codes and names in ASCII.  That gives the mix the target describes: some
# messages hit a rule, most hit none, as in a real chat.
_CJK_COMMON = (
    "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之"
    "过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如"
    "前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其"
)
_CJK_KEYWORD = (
    "价格地址营业周末快递包邮优惠尺码颜色退换货预约课程报名押金发票售后维修保修型号库存批发"
    "零售代理加盟房租押付水电燃气物业停车宽带套餐流量话费充值会员积分兑换礼品券码团购秒杀"
    "茶叶咖啡奶粉尿裤玩具书包鞋帽围巾手套口罩药品体检挂号门诊疫苗宠物猫狗粮驱虫洗澡美容"
    "酒店机票火车签证护照旅游门票景区导游租车司机接送搬家保洁月嫂钟点工家教辅导钢琴舞蹈"
)
_ASCII_WORDS = (
    "hi hello ok thanks wifi open hours busy later call back weekend see you soon "
    "good night morning lunch dinner where when what how much please sorry sure"
).split()
_ASCII_KEYWORD = "abcdefghijklmnopqrstuvwxyz0123456789-_"
_EMOJI = "🎁🎉👍🙏😀😂❤🔥"


def _cjk(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(_CJK_KEYWORD) for _ in range(length))


def _code(rng: random.Random, length: int) -> str:
    """An ASCII keyword: a product code, a name, a shop's own term."""
    inner = "".join(rng.choice(_ASCII_KEYWORD) for _ in range(max(0, length - 2)))
    ends = _ASCII_KEYWORD[:-2]  # no separator at either end
    return (rng.choice(ends) + inner + rng.choice(ends))[:length]


def _words(rng: random.Random, length: int) -> str:
    """Everyday English for filler text."""
    text = ""
    while len(text) < length:
        text += rng.choice(_ASCII_WORDS) + " "
    return text[:length]


# Relative frequency of keyword lengths 1–12: mostly short words and phrases.
_LENGTH_WEIGHTS = (4, 30, 25, 15, 8, 5, 4, 3, 2, 1, 1, 1)


def _keyword(rng: random.Random, mode: MatchMode) -> str:
    """A keyword of 1–12 characters.  A contains keyword is a single character only as an
    emoji, and an ASCII one has at least four: shorter ones (``k``, ``pl``) occur inside
    ordinary words, and nobody keeps a rule that answers every other message."""
    if mode is MatchMode.CONTAINS and rng.random() < 0.01:
        return rng.choice(_EMOJI)
    length = rng.choices(range(1, 13), weights=_LENGTH_WEIGHTS)[0]
    kind = rng.random()
    if kind < 0.5:
        return _cjk(rng, max(length, 2) if mode is MatchMode.CONTAINS else length)
    if kind < 0.85:
        return _code(rng, max(length, 4) if mode is MatchMode.CONTAINS else length)
    split = rng.randint(1, max(1, length - 1))
    return _code(rng, split) + _cjk(rng, max(1, length - split))


def make_rules(count: int, rng: random.Random, uid: int = 1) -> list[Rule]:
    """``count`` rules, about half exact and half contains, unique per (mode, normalised
    keyword) as the store keeps them."""
    rules: list[Rule] = []
    seen: set[tuple[MatchMode, str]] = set()
    while len(rules) < count:
        mode = MatchMode.EXACT if rng.random() < 0.5 else MatchMode.CONTAINS
        keyword = _keyword(rng, mode)
        key = (mode, normalize_keyword(keyword))
        if not key[1] or key in seen:
            continue
        seen.add(key)
        rules.append(Rule(uid=uid, number=len(rules) + 1, keyword=keyword,
                          reply=f"自动回复 {len(rules) + 1}", mode=mode))
    return rules


def _filler(rng: random.Random, length: int) -> str:
    parts: list[str] = []
    size = 0
    while size < length:
        piece = (_words(rng, rng.randint(2, 12)) if rng.random() < 0.3
                 else "".join(rng.choice(_CJK_COMMON) for _ in range(rng.randint(2, 8))))
        if rng.random() < 0.1:
            piece += rng.choice("，。？！,.?!")
        parts.append(piece)
        size += len(piece)
    return "".join(parts)[:length]


def _vary(rng: random.Random, keyword: str) -> str:
    """How people actually type a keyword: upper case, full width, stray spaces."""
    roll = rng.random()
    if roll < 0.2:
        return keyword.upper()
    if roll < 0.3:
        # ASCII to full width (U+FF01..U+FF5E); NFKC maps it back.
        return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in keyword)
    if roll < 0.4:
        return f"  {keyword} "
    return keyword


def make_messages(count: int, rules: Sequence[Rule], rng: random.Random) -> list[str]:
    """Chat messages of 5–60 characters: about 10 % an exact keyword, 20 % a sentence
    around a contains keyword, the rest ordinary chat that mostly matches nothing."""
    exact = [r.keyword for r in rules if r.mode is MatchMode.EXACT]
    contains = [r.keyword for r in rules if r.mode is MatchMode.CONTAINS]
    messages: list[str] = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.1 and exact:
            messages.append(_vary(rng, rng.choice(exact)))
        elif roll < 0.3 and contains:
            keyword = _vary(rng, rng.choice(contains)).strip()
            length = rng.randint(max(5, len(keyword)), max(60, len(keyword)))
            before = rng.randint(0, length - len(keyword))
            messages.append(_filler(rng, before) + keyword
                            + _filler(rng, length - len(keyword) - before))
        else:
            messages.append(_filler(rng, rng.randint(5, 60)))
    return messages


def _timed(match: Callable[[str], Rule | None], messages: Sequence[str],
           repeats: int) -> tuple[float, list[Rule | None]]:
    """Best of ``repeats`` passes in µs per message, and the answers.  The garbage
    collector is off while timing (as in timeit) so that a collection does not land in
    one pass by chance; both matchers run in the same loop, so its cost is shared."""
    best = float("inf")
    answers: list[Rule | None] = []
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter_ns()
            answers = [match(message) for message in messages]
            best = min(best, time.perf_counter_ns() - start)
    finally:
        if enabled:
            gc.enable()
    return best / len(messages) / 1000, answers


class DictNaiveMatcher:
    """The fair naive implementation: exact keywords in a dict (what anyone would
    write), "contains" keywords scanned one by one; ranked as :class:`NaiveMatcher`."""

    def __init__(self, rules: list[Rule]) -> None:
        self._exact: dict[str, Rule] = {}
        self._contains: list[tuple[str, Rule]] = []
        for rule in rules:
            keyword = normalize_keyword(rule.keyword)
            if rule.mode is MatchMode.EXACT:
                self._exact.setdefault(keyword, rule)  # on a tie the rule given first
            elif keyword:
                self._contains.append((keyword, rule))

    def match(self, text: str) -> Rule | None:
        normalized = normalize_keyword(text)
        if not normalized:
            return None
        exact = self._exact.get(normalized)
        if exact is not None:
            return exact
        best: Rule | None = None
        best_key: tuple[int, int] | None = None
        for keyword, rule in self._contains:
            if keyword in normalized:
                key = (-len(keyword), rule.number)
                if best_key is None or key < best_key:
                    best, best_key = rule, key
        return best


def matcher_bytes(rule_count: int, users: int, rng: random.Random) -> float:
    """Memory that one compiled matcher adds, averaged over ``users`` matchers.

    The rules are created before tracing starts: the store hands them over anyway, and a
    session keeps them for their replies whether or not it compiles them.
    """
    rulesets = [make_rules(rule_count, rng, uid) for uid in range(users)]
    # Allocated before tracing: the list that keeps the matchers alive is no matcher's.
    matchers: list[Matcher | None] = [None] * users
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index, rules in enumerate(rulesets):
            matchers[index] = compile_rules(rules)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (after - before) / users


def run(quick: bool = False) -> dict[str, object]:
    """Measure and return the figures (also what ``main`` prints)."""
    rng = random.Random(SEED)
    rules = make_rules(RULES, rng)
    messages = make_messages(300 if quick else 5000, rules, rng)

    compile_s = float("inf")
    matcher = compile_rules(rules)
    for _ in range(1 if quick else 3):
        start = time.perf_counter()
        matcher = compile_rules(rules)
        compile_s = min(compile_s, time.perf_counter() - start)
    naive = DictNaiveMatcher(rules)

    compiled_us, got = _timed(matcher.match, messages, 5 if quick else 20)
    naive_us, expected = _timed(naive.match, messages, 1)
    # The fair baseline answers as the reference scan does.
    reference = NaiveMatcher(rules)
    assert expected[:300] == [reference.match(m) for m in messages[:300]]
    hits = {
        "exact": sum(1 for r in expected if r is not None and r.mode is MatchMode.EXACT),
        "contains": sum(1 for r in expected if r is not None and r.mode is MatchMode.CONTAINS),
        "none": sum(1 for r in expected if r is None),
    }
    memory = {n: matcher_bytes(n, users, rng)
              for n, users in ((0, 100), (10, 100), (200, 20 if quick else 100))}
    memory[RULES] = matcher_bytes(RULES, 1, random.Random(SEED))
    ratio = naive_us / compiled_us
    return {
        "rules": len(rules),
        "exact_rules": sum(1 for r in rules if r.mode is MatchMode.EXACT),
        "contains_rules": sum(1 for r in rules if r.mode is MatchMode.CONTAINS),
        "messages": len(messages),
        "hits": hits,
        "compiled_us": compiled_us,
        "naive_us": naive_us,
        "ratio": ratio,
        "compile_ms": compile_s * 1000,
        "agree": got == expected,
        "memory_bytes": memory,
        "target_met": compiled_us <= TARGET_US and ratio >= TARGET_RATIO and got == expected,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.matching", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer messages (a few seconds)")
    args = parser.parse_args(argv)
    result = run(quick=args.quick)
    hits = result["hits"]
    assert isinstance(hits, dict)
    print(f"matching: {result['rules']} rules ({result['exact_rules']} exact, "
          f"{result['contains_rules']} contains), {result['messages']} messages "
          f"({hits['exact']} exact hits, {hits['contains']} contains hits, "
          f"{hits['none']} no match)")
    header = ("rules", "messages", "µs/msg compiled", "µs/msg naive", "ratio",
              "compile ms", "agree", "target met")
    row = (str(result["rules"]), str(result["messages"]), f"{result['compiled_us']:.2f}",
           f"{result['naive_us']:.1f}", f"{result['ratio']:.0f}×",
           f"{result['compile_ms']:.1f}", "yes" if result["agree"] else "NO",
           "yes" if result["target_met"] else "no")
    widths = [max(len(h), len(c)) for h, c in zip(header, row, strict=True)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print(f"target: ≤ {TARGET_US:g} µs/msg and ≥ {TARGET_RATIO:g}× the naive scan")
    memory = result["memory_bytes"]
    assert isinstance(memory, dict)
    print("memory per compiled matcher (rules themselves excluded): "
          + ", ".join(f"{n} rules {b:,.0f} B" for n, b in memory.items()))
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
