"""Keyword matching: which of a user's rules answers an incoming message.

Pure code (no I/O) so that it can be tested and benchmarked alone, and so that a bot
session answers from memory: the hot path must never wait on MongoDB (docs/PERFORMANCE.md,
'Targets').

Semantics, shared by the compiled matcher and the naive reference scan:

- The message is normalised with :func:`store.models.normalize_keyword` (NFKC, casefold,
  strip), the same function the store uses to decide that two keywords are "the same",
  so a rule that the store accepts as ``ＡＢＣ`` also answers ``abc``.
- An EXACT rule matches when the normalised message equals its normalised keyword; a
  CONTAINS rule when its normalised keyword occurs anywhere in the normalised message.
- Among the rules that match, exact beats contains; then the longer normalised keyword
  (in code points) beats the shorter, because it says more about what was asked; then the
  lower rule number, because it is the older rule.  Two rules equal on all three (the
  store never produces them) fall back to the order in which they were given.
- An empty message, and a rule whose keyword normalises to nothing, match nothing: an
  empty contains keyword would otherwise answer every message.

The compiled form is a dict for exact keywords and an Aho-Corasick automaton for the
contains keywords, so a message costs one normalisation, one dict lookup and one pass over
its characters whatever the number of rules.  The winner for each distinct keyword is
decided at compile time; at match time the automaton yields integer ranks and the lowest
rank wins.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from operator import itemgetter

import ahocorasick

from store.models import MatchMode, Rule, normalize_keyword

__all__ = ["Matcher", "MatcherCache", "compile_rules", "naive_match", "NaiveMatcher"]

# (end_index, rank) pairs from ``Automaton.iter``: the lowest rank is the best rule.
_RANK = itemgetter(1)


class Matcher:
    """A user's rules compiled for matching; immutable, so threads can share one.

    Built by :func:`compile_rules`.  Slots and ``None`` for an absent part keep the
    per-user overhead small: a worker holds thousands of these and most users have only a
    handful of rules, often of one mode only.
    """

    __slots__ = ("_automaton", "_contains", "_exact")

    def __init__(self, exact: dict[str, Rule] | None, automaton: ahocorasick.Automaton | None,
                 contains: tuple[Rule, ...]) -> None:
        self._exact = exact
        self._automaton = automaton
        # Contains rules in priority order; the automaton's values index this tuple.
        self._contains = contains

    def match(self, text: str) -> Rule | None:
        """The rule that answers ``text``, or None.

        Exact first: it beats every contains rule, so a hit skips the automaton.
        """
        normalized = normalize_keyword(text)
        if not normalized:
            return None
        if self._exact is not None:
            rule = self._exact.get(normalized)
            if rule is not None:
                return rule
        if self._automaton is None:
            return None
        best = min(self._automaton.iter(normalized), key=_RANK, default=None)
        return None if best is None else self._contains[best[1]]

    def __len__(self) -> int:
        """The number of distinct keywords that can match (for status and logs)."""
        return len(self._exact or ()) + len(self._automaton or ())

    def __repr__(self) -> str:
        return (f"<Matcher exact={len(self._exact or ())} "
                f"contains={len(self._automaton or ())}>")


# Users without rules (most of them, at first) share one matcher instead of each paying
# for an object of their own.
_EMPTY = Matcher(None, None, ())


def compile_rules(rules: Iterable[Rule]) -> Matcher:
    """Compile ``rules`` (one user's) into a :class:`Matcher`.

    Costs time proportional to the total keyword length (tens of milliseconds for 10,000
    rules), paid once per rule change rather than per message.
    """
    exact: dict[str, Rule] = {}
    contains: list[tuple[int, int, int, str, Rule]] = []
    for order, rule in enumerate(rules):
        keyword = normalize_keyword(rule.keyword)
        if not keyword:
            continue
        if keyword == rule.keyword:
            # casefold() always returns a new string; keep the rule's own when equal, so
            # the dict key costs nothing extra (most keywords are already normal).
            keyword = rule.keyword
        if rule.mode == MatchMode.EXACT:
            # All exact rules for one keyword tie on mode and length: the lowest number
            # wins, and on equal numbers the first given stays.
            held = exact.get(keyword)
            if held is None or rule.number < held.number:
                exact[keyword] = rule
        else:
            contains.append((-len(keyword), rule.number, order, keyword, rule))
    if not exact and not contains:
        return _EMPTY

    automaton = None
    ranked: list[Rule] = []
    if contains:
        contains.sort(key=lambda item: item[:3])
        # STORE_INTS keeps the ranks as C integers in the trie: no Python object per keyword.
        automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        for _, _, _, keyword, candidate in contains:
            # Rules sharing a keyword arrive best first; the first one keeps the keyword
            # and the others can never answer, so they are not kept.
            if keyword not in automaton:
                automaton.add_word(keyword, len(ranked))
                ranked.append(candidate)
        automaton.make_automaton()
    return Matcher(exact or None, automaton, tuple(ranked))


class NaiveMatcher:
    """The reference: a scan over every rule, with keywords normalised once up front.

    Written independently of :class:`Matcher` (no shared ranking code) so that tests can
    use it as an oracle, and normalising up front makes it the fair baseline for the
    benchmark: the loop that a straightforward implementation would run per message.
    """

    __slots__ = ("_prepared",)

    def __init__(self, rules: Iterable[Rule]) -> None:
        self._prepared = [(normalize_keyword(rule.keyword), rule.mode == MatchMode.EXACT, rule)
                          for rule in rules]

    def match(self, text: str) -> Rule | None:
        normalized = normalize_keyword(text)
        if not normalized:
            return None
        best: Rule | None = None
        best_key: tuple[int, int, int] | None = None
        for keyword, is_exact, rule in self._prepared:
            if is_exact:
                if keyword != normalized:
                    continue
                key = (0, -len(keyword), rule.number)
            else:
                # An empty keyword is "in" every text; it matches nothing by definition.
                if not keyword or keyword not in normalized:
                    continue
                key = (1, -len(keyword), rule.number)
            # Strictly less: on a full tie the rule given first stays.
            if best_key is None or key < best_key:
                best, best_key = rule, key
        return best


def naive_match(rules: Iterable[Rule], text: str) -> Rule | None:
    """The rule that answers ``text`` by scanning all ``rules``: the tests' oracle."""
    return NaiveMatcher(rules).match(text)


class MatcherCache:
    """Compiled matchers per user, least recently used dropped beyond ``max_entries``.

    Sessions read it from their threads and a rule change invalidates it from an asyncio
    task, so every operation takes one lock; each holds it only for a dict operation,
    short enough that taking it on the event loop does not block the loop.

    A session compiles outside the lock from rules it loaded earlier, so an invalidation
    can arrive between its load and its ``put``; caching that matcher would serve the old
    rules until the next change.  Pass ``stamp=cache.stamp()`` taken *before* loading and
    such a put is dropped.  To stay bounded the cache remembers only the latest
    ``max_entries`` invalidations; a put older than the ones it has forgotten is dropped
    too, which costs at most one recompilation.
    """

    def __init__(self, max_entries: int = 5000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, Matcher] = OrderedDict()
        self._clock = 0
        self._invalidated: OrderedDict[Hashable, int] = OrderedDict()
        self._forgotten_before = 0

    def get(self, uid: Hashable) -> Matcher | None:
        """The cached matcher for ``uid`` (now the most recently used), or None."""
        with self._lock:
            matcher = self._entries.get(uid)
            if matcher is not None:
                self._entries.move_to_end(uid)
            return matcher

    def stamp(self) -> int:
        """A token to take before loading rules and to give to :meth:`put`."""
        with self._lock:
            return self._clock

    def put(self, uid: Hashable, matcher: Matcher, *, stamp: int | None = None) -> bool:
        """Cache ``matcher`` for ``uid``; False when dropped because ``uid`` was
        invalidated after ``stamp`` (its rules changed while they were being compiled)."""
        with self._lock:
            if stamp is not None:
                invalidated = self._invalidated.get(uid, self._forgotten_before)
                if stamp < invalidated:
                    return False
            self._entries[uid] = matcher
            self._entries.move_to_end(uid)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
            return True

    def invalidate(self, uid: Hashable) -> None:
        """Forget ``uid``'s matcher: its rules changed."""
        with self._lock:
            self._entries.pop(uid, None)
            self._clock += 1
            self._invalidated[uid] = self._clock
            self._invalidated.move_to_end(uid)
            while len(self._invalidated) > self._max:
                _, when = self._invalidated.popitem(last=False)
                self._forgotten_before = when

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
