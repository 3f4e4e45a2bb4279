"""Small text utilities shared by search, extraction and assembly."""

from __future__ import annotations

import re
import unicodedata

STOP_WORDS = frozenset(
    """a an and are as at be been by can could did do does for from had has have how in into is it its
    of on or that the their there these this those to use used uses using was were what when where which
    while who why will with within without about among across after before between during over under
    via per than then they them we our your you i me my such other others also any all each both most more
    some many much very not no nor only own same so too just should would may might must""".split()
)

_BRACKETED = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
_TOKEN = re.compile(r"[^\W_]+")
_WORD = re.compile(r"[A-Za-z0-9]+(?:[-'][A-Za-z0-9]+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")


def words(text: str) -> list[str]:
    """The words of ``text``, in order."""
    return _WORD.findall(text)


def keywords(text: str) -> list[str]:
    """Lower-cased content words of ``text``, without stop words or duplicates, in order."""
    seen: dict[str, None] = {}
    for word in words(text.lower()):
        if word not in STOP_WORDS and len(word) > 1:
            seen.setdefault(word, None)
    return list(seen)


def head_terms(query: str) -> list[str]:
    """Content words of the query's leading noun phrase: what the rows are about ("water treatment technologies")."""
    head: list[str] = []
    for word in words(query.lower()):
        if word in STOP_WORDS:
            if head:
                break
            continue
        head.append(word)
    return head


def sentences(text: str) -> list[str]:
    """``text`` split into sentences; each is a verbatim substring of ``text``."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def singular(word: str) -> str:
    """A crude singular: enough to merge "filters" with "filter", not a lemmatiser."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def normalise_key(value: str) -> str:
    """Normalised form of a name: NFKC, lower case, no bracketed parts (unless that is all), singular words.

    "Reverse-Osmosis Systems (RO) [3]" -> "reverse osmosis system"; "(RO)" -> "ro".
    """
    value = unicodedata.normalize("NFKC", value).lower()
    tokens = _TOKEN.findall(_BRACKETED.sub(" ", value)) or _TOKEN.findall(value)
    return " ".join(singular(token) for token in tokens)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 row``, ``2 rows``, ``1,234 tokens``, ``1 query``/``3 queries`` (``nouns`` for an irregular plural)."""
    return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"


def slug(value: str) -> str:
    """A stable identifier made from a value."""
    return "-".join(normalise_key(value).split()) or "item"


_QUOTED = re.compile(r'"([^"]+)"')
_CLAUSE = re.compile(r"[,;:.!?()\[\]]")


def noun_phrases(text: str) -> list[str]:
    """Maximal runs of content words, lower-cased ("water treatment technologies", "specialty crop production")."""
    phrases: list[str] = []
    for clause in _CLAUSE.split(text.lower()):
        run: list[str] = []
        for word in [*words(clause), ""]:
            if word and word not in STOP_WORDS and len(word) > 1:
                run.append(word)
            elif run:
                phrases.append(" ".join(run))
                run = []
    return list(dict.fromkeys(phrases))


def plan_queries(question: str, limit: int = 4) -> list[str]:
    """1–``limit`` search queries for a question, narrowest first.

    The noun phrases as quoted phrases (with any phrase the user quoted), then every keyword, then the
    leading noun phrase alone: what the rows are about, without its context.
    """
    quoted = [" ".join(q.lower().split()) for q in _QUOTED.findall(question)]
    phrases = list(dict.fromkeys(quoted + noun_phrases(_QUOTED.sub(",", question))))
    if not phrases:
        return []
    queries = [
        " ".join(f'"{p}"' if " " in p else p for p in phrases),
        " ".join(keywords(question.replace('"', " "))),
        phrases[0],
    ]
    return list(dict.fromkeys(q for q in queries if q))[:limit]
