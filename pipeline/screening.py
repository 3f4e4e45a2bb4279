"""Screening: does a document address the question (and meet the user's criteria)? Lexical, explainable, offline.

A question is reduced to its topic: its concepts (noun phrases, those joined by "of" taken as one), as
Snowball stems, without generic words. A trailing study-design descriptor ("…: a systematic review and
meta-analysis", "Meta-Analysis of Randomized Controlled Trials") is not the topic: it says what kind of studies
are wanted: when it names trials, papers that report none are excluded; when it says the question is itself a
review, other reviews rank last.

A document's score is the share of the topic's concepts its title, abstract and full text state, each word
weighted by 1 + its idf among the documents found. The score is absolute (0–1), so an off-topic library scores
low however its documents rank among themselves; the documents that pass are ranked by BM25 over the topic's
words too. docs/quality.md measures it on real systematic reviews.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache

import msgspec
import snowballstemmer  # type: ignore[import-untyped]

from contracts import Document
from contracts.screening import Criterion, Flow, Paper
from pipeline.text import STOP_WORDS, sentences, words

#: default share of the topic's weight a document must state to be read
THRESHOLD = 0.6

#: exclusion kinds, as the flow counts them
OFF_TOPIC = "off topic"
NO_TEXT = "no abstract or full text"
FAILS_INCLUSION = "fails an inclusion criterion"
MEETS_EXCLUSION = "meets an exclusion criterion"
JUDGED_IRRELEVANT = "judged irrelevant by the model"
NO_QUOTE = "no verifiable quote"
NO_DECISION = "no decision from the model"

# Words of a study-design descriptor at the end of a question: what kind of study answers it, not its topic.
_DESIGN_WORDS = frozenset(
    """systematic literature review reviews meta analysis analyses metaanalysis meta-analysis meta-analyses scoping
    narrative umbrella rapid network tertiary secondary study studies evidence synthesis update updated protocol
    randomized randomised controlled clinical trial trials rcts rct cohort observational prospective retrospective
    case-control cross-sectional comparative of and a an the with in""".split()
)
_REVIEW_DESIGN = frozenset("review reviews meta-analysis meta-analyses metaanalysis scoping".split())
_TRIAL_DESIGN = frozenset("randomized randomised controlled trial trials rct rcts cohort".split())
# Generic words of a question that say how, not what ("effect", "management"); never weighed as its topic.
_GENERIC = frozenset(
    """effect effects impact role management outcome outcomes evidence approach approaches method methods based
    current new overview relation relationship association associations factor factors towards toward upon
    regarding versus specialized specialised specific various different novel initial corresponding several
    certain particular""".split()
)
_CLAUSE = re.compile(r"[,;:.!?()\[\]]")
_DESCRIPTOR_SPLIT = re.compile(r"\s*(?:[:?]|\s[-–—]\s)\s*")
_REVIEW_TITLE = re.compile(
    r"\b(?:systematic|scoping|literature|narrative|umbrella)\s+review|\bmeta-?analys[ie]s\b", re.I
)
_TRIAL_TEXT = re.compile(r"\brandomi[sz]ed\b|\btrial\b|\bRCT\b", re.I)
_K1, _B = 1.2, 0.75
_MAX_TEXT_CHARS = 200_000  # full text beyond this is not read for screening

# A Snowball stemmer keeps the word it works on in itself: one per thread (workers screen on several at once).
_stemmers = threading.local()


@lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """The Snowball (Porter 2) stem of a lower-case word: "technologies" and "technology" → "technolog"."""
    stemmer = getattr(_stemmers, "english", None)
    if stemmer is None:
        stemmer = _stemmers.english = snowballstemmer.stemmer("english")
    return str(stemmer.stemWord(word))


def stems(text: str) -> list[str]:
    """Stems of the content words of ``text``, in order, repeats kept."""
    return [stem(w) for w in words(text.lower()) if w not in STOP_WORDS and len(w) > 1]


class Topic(msgspec.Struct, frozen=True, kw_only=True):
    """What a question is about, as stems with weights, and the study design it asks for."""

    #: stem → the question's word for it (for reasons), topic terms only
    words: dict[str, str]
    #: the topic's noun phrases as stems ("mesenchymal stem cell", "knee"): each is a concept to state
    phrases: list[list[str]]
    #: the question ends in a review-design descriptor: other reviews are not what it is after
    wants_primary: bool = False
    #: the descriptor names trials: documents that report none are excluded
    wants_trials: bool = False
    include: list[tuple[str, list[str]]] = []
    exclude: list[tuple[str, list[str]]] = []


def topic(question: str, criteria: Sequence[Criterion] = ()) -> Topic:
    """The topic of ``question``: its words without a trailing design descriptor or generic words."""
    subject, descriptor = split_descriptor(question)
    terms: dict[str, str] = {}
    phrases: list[list[str]] = []
    for phrase in _concepts(subject):
        kept = [w for w in phrase if w not in _GENERIC]
        new = [stem(w) for w in kept if stem(w) not in terms]
        terms |= {stem(w): w for w in kept if stem(w) not in terms}
        if new:
            phrases.append(new)
    design = set(words(descriptor.lower()))
    return Topic(
        words=terms,
        phrases=phrases,
        wants_primary=bool(design & _REVIEW_DESIGN),
        wants_trials=bool(design & _TRIAL_DESIGN),
        include=[(c.text, list(dict.fromkeys(stems(c.text)))) for c in criteria if c.kind == "include"],
        exclude=[(c.text, list(dict.fromkeys(stems(c.text)))) for c in criteria if c.kind == "exclude"],
    )


def _concepts(subject: str) -> list[list[str]]:
    """The subject's noun phrases, those joined by "of" taken as one ("animal models of depression")."""
    concepts: list[list[str]] = []
    for clause in _CLAUSE.split(subject.lower()):
        run: list[str] = []
        joined = False  # an "of" since the last run: the next run extends the last concept
        for word in [*words(clause), ""]:
            if word and word not in STOP_WORDS and len(word) > 1:
                run.append(word)
                continue
            if run:
                if joined:
                    concepts[-1] += run
                else:
                    concepts.append(run)
                run, joined = [], False
            joined = joined or (word == "of" and bool(concepts))
    return concepts


def split_descriptor(question: str) -> tuple[str, str]:
    """``question`` split into its subject and a trailing study-design descriptor ("" when there is none).

    "X: a systematic review and meta-analysis" → ("X", "a systematic review and meta-analysis"); a question
    that is all design words ("systematic reviews in software engineering" is not) keeps them as its subject.
    """
    parts = [p for p in _DESCRIPTOR_SPLIT.split(question.strip()) if p]
    cut = len(parts)
    while cut > 1 and all(w in _DESIGN_WORDS for w in words(parts[cut - 1].lower())):
        cut -= 1
    subject = question.strip()
    if cut < len(parts):
        first_descriptor = parts[cut]
        subject = question[: question.rfind(first_descriptor)].rstrip(" :?-–—")
    return subject, question[len(subject) :].strip(" :?-–—")


class Judgement(msgspec.Struct, frozen=True, kw_only=True):
    """The screening's verdict on one document."""

    score: float
    included: bool
    reason: str
    exclusion: str | None = None
    quote: str | None = None
    #: orders the documents that pass (BM25 over the topic terms, design preferences applied)
    rank_score: float = 0.0


def screen(documents: Sequence[Document], subject: Topic, threshold: float = THRESHOLD) -> list[Judgement]:
    """A judgement for each document, in order."""
    texts = [_text(d) for d in documents]
    bags = [_bag(t) for t in texts]
    title_bags = [set(stems(d.title)) for d in documents]
    weights = _weights(subject, bags)
    lengths = [sum(b.values()) for b in bags]
    average = sum(lengths) / max(len(lengths), 1) or 1.0
    judgements = []
    for document, text, bag, title, length in zip(documents, texts, bags, title_bags, lengths, strict=True):
        if not (document.abstract.strip() or (document.full_text or "").strip()):
            judgements.append(Judgement(score=0.0, included=False, reason=NO_TEXT, exclusion=NO_TEXT))
            continue
        stated = [t for t in weights if t in bag]
        coverage = _coverage(subject, weights, bag)
        bm25 = sum(
            weights[t] * (bag[t] + 2 * (t in title)) * (_K1 + 1) / (bag[t] + _K1 * (1 - _B + _B * length / average))
            for t in stated
        )
        judgements.append(
            _judge(document, text, subject, bag=bag, coverage=coverage, bm25=bm25, threshold=threshold, weights=weights)
        )
    return judgements


def _judge(
    document: Document,
    text: str,
    subject: Topic,
    *,
    bag: Counter[str],
    coverage: float,
    bm25: float,
    threshold: float,
    weights: dict[str, float],
) -> Judgement:
    missing = [subject.words[t] for t in weights if t not in bag]
    stated = [subject.words[t] for t in weights if t in bag]
    if coverage < threshold:
        reason = (
            f"states {coverage:.0%} of the question's concepts (needs {threshold:.0%}); missing: {', '.join(missing)}"
        )
        return Judgement(score=coverage, included=False, reason=reason, exclusion=OFF_TOPIC)
    quote = _best_sentence(text, set(weights))
    for criterion, needed in subject.include:
        if needed and 2 * sum(s in bag for s in needed) < len(needed):
            reason = f"does not state inclusion criterion {criterion!r}"
            return Judgement(score=coverage, included=False, reason=reason, exclusion=FAILS_INCLUSION, quote=quote)
    summary = set(stems(f"{document.title} {document.abstract}")) if subject.exclude else set()
    for criterion, banned in subject.exclude:
        if banned and all(s in summary for s in banned):
            reason = f"meets exclusion criterion {criterion!r}"
            return Judgement(score=coverage, included=False, reason=reason, exclusion=MEETS_EXCLUSION, quote=quote)
    if subject.wants_trials and not _TRIAL_TEXT.search(text):
        reason = "reports no trial, and the question asks for trials"
        return Judgement(score=coverage, included=False, reason=reason, exclusion=FAILS_INCLUSION)
    notes = []
    rank_score = coverage * (1 + bm25)
    if subject.wants_primary and _REVIEW_TITLE.search(document.title):
        rank_score *= 0.5
        notes.append("is itself a review")
    reason = f"states {coverage:.0%} of the question's concepts ({', '.join(stated)})"
    if missing:
        reason += f"; missing: {', '.join(missing)}"
    if notes:
        reason += "; " + ", ".join(notes)
    return Judgement(score=coverage, included=True, reason=reason, quote=quote, rank_score=round(rank_score, 4))


def flow(papers: Sequence[Paper], *, found: int, duplicates: int) -> Flow:
    """The PRISMA-style counts of ``papers`` (their decisions and the rows citing them)."""
    excluded = Counter(p.exclusion or "" for p in papers if p.decision == "excluded")
    return Flow(
        found=found,
        duplicates_removed=duplicates,
        screened=len(papers),
        excluded=sum(excluded.values()),
        excluded_by=dict(excluded.most_common()),
        not_reached=sum(p.decision == "not_reached" for p in papers),
        read=sum(p.decision == "included" for p in papers),
        cited=sum(p.rows > 0 for p in papers),
    )


def _weights(subject: Topic, bags: Sequence[Counter[str]]) -> dict[str, float]:
    """Each topic term's weight: 1 + its idf among the documents (BM25's), so rarer words count more."""
    count = len(bags)
    weights = {}
    for term in subject.words:
        found = sum(1 for bag in bags if term in bag)
        weights[term] = 1 + math.log(1 + (count - found + 0.5) / (found + 0.5))
    return weights


def _coverage(subject: Topic, weights: dict[str, float], bag: Counter[str]) -> float:
    """The share of the topic's phrases the document states: a phrase is stated when at least half of its
    weight is, in at least two of its words if it has two ("depression" alone does not state "animal models of
    depression", however rare it is)."""
    if not subject.phrases:
        return 0.0
    stated = 0
    for phrase in subject.phrases:
        found = [t for t in phrase if t in bag]
        enough = 2 * sum(weights[t] for t in found) >= sum(weights[t] for t in phrase)
        stated += enough and len(found) >= min(2, len(phrase))
    return round(stated / len(subject.phrases), 3)


def _bag(text: str) -> Counter[str]:
    """How often each stem occurs in ``text`` (each distinct word stemmed once)."""
    bag: Counter[str] = Counter()
    for word, count in Counter(words(text.lower())).items():
        if word not in STOP_WORDS and len(word) > 1:
            bag[stem(word)] += count
    return bag


def _text(document: Document) -> str:
    return "\n".join(p for p in (document.title, document.abstract, (document.full_text or "")[:_MAX_TEXT_CHARS]) if p)


def _best_sentence(text: str, terms: Iterable[str]) -> str | None:
    """The sentence stating most of ``terms`` (verbatim from ``text``), or None when none states any."""
    wanted = set(terms)
    best, hits = None, 0
    for sentence in (s for line in text[:20_000].split("\n") for s in sentences(line)):
        found = len(wanted & set(stems(sentence)))
        if found > hits:
            best, hits = sentence, found
    return best
