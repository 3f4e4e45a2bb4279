"""Which entity names are the same entity: abbreviations, normalised keys and fuzzy grouping."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from rapidfuzz import fuzz, process

from pipeline.text import normalise_key, singular, words

GENERIC_WORDS = frozenset(
    """system method process technique technology treatment unit approach device equipment application
    procedure strategy tool setup""".split()
)

_PAREN = re.compile(r"\(([^()]*)\)")
_TOKEN = re.compile(r"[^\W_]+")
_SHORT_FORM = re.compile(r"[^\W_][\w\-/.&+]{1,9}")
_BOUNDARY = re.compile(r".*[()\[\].;:!?]", re.DOTALL)


def _is_short_form(token: str) -> bool:
    """One token of 2–10 chars with a letter and a capital (ordinary lower-case words are not abbreviations)."""
    return bool(_SHORT_FORM.fullmatch(token)) and any(c.isupper() for c in token)


def _abbreviates(short: str, long: list[str]) -> bool:
    """Schwartz–Hearst: the long form starts with the short form's first letter and holds all its letters in order."""
    letters = [c for c in short.lower() if c.isalpha()]
    text = " ".join(long).lower()
    if not letters or not text.startswith(letters[0]) or short.lower() in _TOKEN.findall(text):
        return False
    position = 1
    for letter in letters[1:]:
        position = text.find(letter, position) + 1
        if not position:
            return False
    return True


def _short_key(short: str) -> str:
    """Lower-cased short form, without a plural "s" ("AOPs" -> "aop")."""
    return short[:-1].lower() if short.endswith("s") and short[:-1].isupper() else short.lower()


def find_abbreviations(text: str) -> dict[str, str]:
    """Abbreviations defined in ``text`` as "long form (SF)" or "SF (long form)": ``{"sf": "long form"}``."""
    found: dict[str, str] = {}
    for match in _PAREN.finditer(text):
        inner = match.group(1).strip()
        before = text[: match.start()]
        before_words = words(_BOUNDARY.sub("", before))
        if _is_short_form(inner):  # long form (SF)
            limit = min(len(inner) + 5, 2 * len(inner), len(before_words))
            long = next((before_words[-n:] for n in range(1, limit + 1) if _abbreviates(inner, before_words[-n:])), [])
            if long:
                found[_short_key(inner)] = normalise_key(" ".join(long))
                continue
        if before_words and before.rstrip().endswith(before_words[-1]) and _is_short_form(before_words[-1]):
            short, long = before_words[-1], words(re.split(r"[,;]", inner)[0])  # SF (long form)
            if len(long) <= min(len(short) + 5, 2 * len(short)) and _abbreviates(short, long):
                found[_short_key(short)] = normalise_key(" ".join(long))
    return found


def aliases_from(texts: Iterable[str]) -> dict[str, str]:
    """Abbreviation -> long form over many texts; the most frequent long form wins (ties: first seen)."""
    counts: dict[str, Counter[str]] = {}
    for text in texts:
        for short, long in find_abbreviations(text).items():
            counts.setdefault(short, Counter())[long] += 1
    return {short: forms.most_common(1)[0][0] for short, forms in counts.items()}


def entity_key(value: str, aliases: Mapping[str, str]) -> str:
    """``normalise_key`` of an entity name, with known abbreviations replaced by their long form."""
    out: list[str] = []
    for token in normalise_key(value).split():
        long = aliases.get(token) or (aliases.get(token[:-1]) if token.endswith("s") else None)
        out.append(long or token)
    return " ".join(out)


class EntityMatcher:
    """Decides which entity names are the same entity, and clusters lists of names."""

    def __init__(
        self, *, threshold: float = 90, generic: Iterable[str] = (), aliases: Mapping[str, str] | None = None
    ) -> None:
        """``threshold``: rapidfuzz token_set_ratio cut-off (0-100); ``generic``: extra category words."""
        self.threshold = threshold
        self.generic = GENERIC_WORDS | {singular(w) for g in generic for w in g.lower().split()}
        self.aliases: Mapping[str, str] = dict(aliases or {})

    def key(self, value: str) -> str:
        """``entity_key`` with this matcher's aliases."""
        return entity_key(value, self.aliases)

    def _core(self, key: str) -> str:
        """The key without generic words (the whole key if nothing else is left): what fuzzy matching compares."""
        return " ".join(w for w in key.split() if w not in self.generic) or key

    def same(self, a: str, b: str) -> bool:
        """Whether two keys (outputs of ``key``) name the same entity.

        Same words, or words differing only by generic words ("reverse osmosis" == "reverse osmosis system"); a key
        whose words are a strict subset of the other's differs if any extra word is not generic ("filtration" !=
        "sand filtration"); otherwise token_set_ratio of the keys without generic words >= threshold. Empty keys
        never match.
        """
        words_a, words_b = set(a.split()), set(b.split())
        if not words_a or not words_b:
            return False
        if words_a == words_b:
            return True
        core_a, core_b = words_a - self.generic, words_b - self.generic
        if core_a == core_b:
            return bool(core_a) or words_a < words_b or words_b < words_a
        if core_a < core_b or core_b < core_a:
            return False
        return fuzz.token_set_ratio(self._core(a), self._core(b)) >= self.threshold

    def group(self, values: Sequence[str]) -> list[int]:
        """For each value in order, the index of its group (0, 1, 2… in order of first appearance).

        Greedy in input order: a value joins the first group holding a key it is ``same`` as, else starts a new one.
        An exact key seen before goes straight to that key's group; rapidfuzz pre-filters the fuzzy candidates.
        """
        exact: dict[str, int] = {}
        keys: list[str] = []  # distinct non-empty keys seen, in order
        cores: list[str] = []
        groups: list[int] = []
        count = 0
        for value in values:
            key = self.key(value)
            if not key:  # empty keys never match: a group of their own
                found = []
            elif key in exact:
                found = [exact[key]]
            else:
                core = self._core(key)
                matches = process.extract(
                    core, cores, scorer=fuzz.token_set_ratio, score_cutoff=self.threshold, limit=None
                )
                found = [exact[keys[i]] for _, _, i in matches if self.same(key, keys[i])]
                exact[key] = min(found, default=count)
                keys.append(key)
                cores.append(core)
            groups.append(min(found, default=count))
            count += groups[-1] == count
        return groups
