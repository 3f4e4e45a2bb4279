"""The grounding check every extractor's output goes through: no cell without a quote that is really in the document."""

from __future__ import annotations

import bisect
import math
import re
import unicodedata
from array import array
from decimal import Decimal
from typing import NamedTuple

import msgspec
from rapidfuzz import fuzz

from contracts import (
    CandidateRow,
    Citation,
    Document,
    ExtractedRow,
    FieldDefinition,
    FieldValue,
    PreparedSchema,
    TextPart,
)
from pipeline.extractors.base import citation_metadata
from pipeline.text import keywords
from pipeline.values import convert, parse_number

DEFAULT_THRESHOLD = 92.0
MIN_QUOTE_CHARS = 3

_COMBINING = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
_INVISIBLE = "\u00ad\u200b\u200c\u200d\u2060\ufeff"
# One token of the original text each: a hyphen at a line break between letters (dropped), a whitespace run
# (one space), an invisible character (dropped), a run of plain ASCII (lower-cased in bulk), or any other
# character with its combining marks (NFKC + casefold, so "e" + U+0301 matches "é").
_TOKEN = re.compile(
    rf"(?P<break>(?<=[^\W\d_])[-\u2010\u2011\u00ad][^\S\n]*\n\s*(?=[^\W\d_]))"
    rf"|(?P<space>\s+)"
    rf"|(?P<invisible>[{_INVISIBLE}]+)"
    rf"|(?P<ascii>(?:[!-,.-~](?![{_COMBINING}]))+)"
    rf"|.[{_COMBINING}]*",
    re.DOTALL,
)
_PUNCTUATION = str.maketrans(
    {
        **dict.fromkeys("‘’‚‛", "'"),
        **dict.fromkeys("“”„", '"'),
        **dict.fromkeys("‐‑‒–—―−", "-"),
    }
)
# Every reading of the numbers a passage writes: plain ("12", "12.5", "1.5e3"), thousands ("1,200", "1 200"),
# decimal comma ("12,5"). Extra readings only make the check lenient, never let an absent number through.
_NUMBER_READINGS = (
    re.compile(r"(?<![\d.])\d+(?:\.\d+)?(?:e[-+]?\d+)?"),
    re.compile(r"(?<!\d)\d{1,3}(?:([, ])\d{3})(?:\1\d{3})*(?:\.\d+)?(?!\d)"),
    re.compile(r"(?<!\d)\d+,\d{1,2}(?!\d)"),
)
_PLAIN_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_YEAR = re.compile(r"(?<!\d)\d{4}(?!\d)")
_STEM = 5  # content words are compared by their first letters: "filters" states "filtration"
_MIN_FUZZY_CHARS = 13  # below this a fuzzy score >= 92 only finds the value inside some longer word
_CONTEXT_CHARS = 600  # how far either side of a quote its context sentences are looked for
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])|\n")


class GroundingCounts(msgspec.Struct, kw_only=True):
    """What the grounding check did with the values it was given; summed across documents."""

    verified: int = 0
    repaired: int = 0
    rejected: int = 0
    unconvertible: int = 0
    rows_dropped: int = 0

    def add(self, other: GroundingCounts) -> None:
        """Add ``other``'s counts to these, in place."""
        self.verified += other.verified
        self.repaired += other.repaired
        self.rejected += other.rejected
        self.unconvertible += other.unconvertible
        self.rows_dropped += other.rows_dropped


def normalise(text: str) -> str:
    """``text`` as matching sees it: NFKC, case-folded, plain quotes and dashes, joined hyphenation, single spaces."""
    return _normalise(text)[0]


def _normalise(text: str) -> tuple[str, array[int], array[int]]:
    """The normalised text, and for each of its characters the start and end of what it came from."""
    parts: list[str] = []
    starts: array[int] = array("q")
    ends: array[int] = array("q")
    for token in _TOKEN.finditer(text):
        kind = token.lastgroup
        start, end = token.span()
        if kind == "ascii":
            parts.append(token.group().lower())
            starts.extend(range(start, end))
            ends.extend(range(start + 1, end + 1))
        elif kind == "space":
            if parts and parts[-1] != " ":
                parts.append(" ")
                starts.append(start)
                ends.append(end)
        elif kind is None:
            piece = unicodedata.normalize("NFKC", token.group()).casefold().translate(_PUNCTUATION)
            parts.append(piece)
            starts.extend([start] * len(piece))
            ends.extend([end] * len(piece))
    if parts and parts[-1] == " ":
        parts.pop()
        starts.pop()
        ends.pop()
    return "".join(parts), starts, ends


class Match(NamedTuple):
    """Where a quote is: the original passage, whether it matched exactly, its offsets in ``SourceText.original``."""

    passage: str
    exact: bool
    start: int
    end: int


class SourceText:
    """A document's text (title, abstract, full text joined with newlines) normalised for matching.

    Keeps a map back to the original characters, so a match is cited verbatim even when the quote changed
    whitespace, case, hyphenation or unicode forms, and located in the part, page and section it is in.
    """

    def __init__(self, document: Document) -> None:
        self.document = document
        parts: list[tuple[TextPart, str]] = [
            ("title", document.title),
            ("abstract", document.abstract),
            ("full_text", document.full_text or ""),
        ]
        self._parts: list[tuple[TextPart, int, str]] = []
        offset = 0
        for part, text in parts:
            if text:
                self._parts.append((part, offset, text))
                offset += len(text) + 1
        self.original = "\n".join(text for _, _, text in self._parts)
        self.normalised, self._starts, self._ends = _normalise(self.original)

    def find(self, quote: str, threshold: float) -> Match | None:
        """Where the original passage ``quote`` stands for is; None when it is not there."""
        needle = normalise(quote)
        if len(needle) < MIN_QUOTE_CHARS:
            return None
        start = self.normalised.find(needle)
        if start >= 0:
            return self._match(start, start + len(needle), exact=True)
        alignment = fuzz.partial_ratio_alignment(needle, self.normalised, score_cutoff=threshold)
        if alignment is None:
            return None
        start, end = self._whole_words(alignment.dest_start, alignment.dest_end, needle)
        return self._match(start, end, exact=False) if start < end else None

    def cite(self, field: str, match: Match) -> Citation:
        """A citation of ``match`` backing ``field``: the passage, its part, offsets in that part, page, section
        and the sentence either side."""
        part, offset, text = next(p for p in reversed(self._parts) if p[1] <= match.start)
        start, end = match.start - offset, min(match.end - offset, len(text))
        page = section = None
        if part == "full_text":
            document = self.document
            page = bisect.bisect_right(document.pages, start) or None
            section = next((s.heading for s in reversed(document.sections) if s.start <= start), None)
        return Citation(
            source_id=self.document.id,
            field=field,
            text_span=text[start:end],
            metadata=citation_metadata(self.document),
            part=part,
            char_start=start,
            char_end=end,
            page_number=page,
            section=section,
            before=_sentence_before(text, start),
            after=_sentence_after(text, end),
        )

    def _whole_words(self, start: int, end: int, needle: str) -> tuple[int, int]:
        """Widen a fuzzy match to whole words and the quote's edge punctuation, so the citation cuts nothing."""
        text = self.normalised
        while start > 0 and text[start - 1].isalnum() and text[start].isalnum():
            start -= 1
        while end < len(text) and text[end].isalnum() and text[end - 1].isalnum():
            end += 1
        if start > 0 and not needle[0].isalnum() and text[start - 1] == needle[0] != text[start]:
            start -= 1
        if end < len(text) and not needle[-1].isalnum() and text[end] == needle[-1] != text[end - 1]:
            end += 1
        while start < end and text[start] == " ":
            start += 1
        while end > start and text[end - 1] == " ":
            end -= 1
        return start, end

    def _match(self, start: int, end: int, *, exact: bool) -> Match:
        first, last = self._starts[start], self._ends[end - 1]
        return Match(self.original[first:last], exact, first, last)


def _sentence_before(text: str, start: int) -> str:
    """The text before ``start`` back to the start of the sentence before the quote's own (at most a paragraph)."""
    head = text[max(0, start - _CONTEXT_CHARS) : start + 1]  # one more: a break's lookahead sees the quote
    head = head[head.rfind("\n\n") + 2 :] if "\n\n" in head else head
    ends = [m.end() for m in _SENTENCE_BREAK.finditer(head) if m.end() < len(head)]
    cut = ends[-2] if len(ends) >= 2 else 0
    return " ".join(head[cut:-1].split())


def _sentence_after(text: str, end: int) -> str:
    """The text after ``end`` to the end of the sentence after the quote's own (at most a paragraph)."""
    tail = text[end : end + _CONTEXT_CHARS]
    tail = tail[: tail.find("\n\n")] if "\n\n" in tail else tail
    ends = [m.start() for m in _SENTENCE_BREAK.finditer(tail)]
    cut = ends[1] if len(ends) >= 2 else len(tail)
    return " ".join(tail[:cut].split())


def ground(
    schema: PreparedSchema,
    document: Document,
    rows: list[ExtractedRow],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    text: SourceText | None = None,
) -> tuple[list[CandidateRow], GroundingCounts]:
    """Keep the values whose quote is in ``document`` and supports them, cited verbatim; drop rows left without."""
    source = text if text is not None else SourceText(document)
    generated = set(schema.identifier_fields) if schema.key_field is not None else set()
    counts = GroundingCounts()
    candidates: list[CandidateRow] = []
    for row in rows:
        values: dict[str, FieldValue] = {}
        citations: list[Citation] = []
        flags: dict[str, str] = {}
        repaired: list[str] = []
        for field in schema.fields:
            if field.name in generated or _is_blank(row.values.get(field.name)):
                continue
            found = _check(field, row.values[field.name], row.evidence.get(field.name), source, threshold)
            if found is None:
                counts.rejected += 1
                continue
            value, match = found
            converted = convert(field, value)
            if converted.problem is not None:
                counts.unconvertible += 1
                flags[field.name] = converted.problem
            elif converted.value is not None:
                values[field.name] = converted.value
                citations.append(source.cite(field.name, match))
                if match.exact:
                    counts.verified += 1
                else:
                    counts.repaired += 1
                    repaired.append(field.name)
        required = [f.name for f in schema.fields if f.required and f.name not in generated]
        if not values or any(name not in values for name in required):
            counts.rows_dropped += 1
            continue
        candidates.append(
            CandidateRow(
                values={f.name: values.get(f.name) for f in schema.fields},
                citations=citations,
                source_id=document.id,
                rank=document.rank,
                flags=flags,
                repaired=repaired,
                relevance=document.score,
                reason=row.reason,
            )
        )
    return candidates, counts


def _is_blank(value: FieldValue) -> bool:
    return value is None or value == [] or (isinstance(value, str) and not value.strip())


def _check(
    field: FieldDefinition, value: FieldValue, quote: str | None, source: SourceText, threshold: float
) -> tuple[FieldValue, Match] | None:
    """The value as far as its quote supports it, and where the quote is; None if rejected."""
    if not quote or not quote.strip():
        return None
    found = source.find(quote, threshold)
    if found is None:
        return None
    supported = _supported(field, value, normalise(found.passage), threshold)
    return None if supported is None else (supported, found)


def _supported(field: FieldDefinition, value: FieldValue, passage: str, threshold: float) -> FieldValue:
    """``value`` (for lists, its items) as far as ``passage`` states it, or None."""
    if field.type in ("bool", "dict"):
        return value
    if field.type == "date":
        year = _YEAR.search(str(value))
        return value if year is not None and year.group() in _YEAR.findall(passage) else None
    numeric = field.type in ("int", "float", "list[int]", "list[float]")
    if field.type.startswith("list"):
        items = value if isinstance(value, list) else [value]
        kept = [item for item in items if _item_supported(item, passage, numeric, threshold)]
        return kept or None
    return value if _item_supported(value, passage, numeric, threshold) else None


def _item_supported(item: object, passage: str, numeric: bool, threshold: float) -> bool:
    if isinstance(item, bool):
        return True
    if isinstance(item, int):  # exact, however many digits (str() of a huge int raises)
        return Decimal(item).copy_abs() in _numbers(passage)
    if isinstance(item, float):
        return math.isfinite(item) and Decimal(str(item)).copy_abs() in _numbers(passage)
    if not isinstance(item, str):
        return True  # nested lists and dicts are not judged here: conversion reports them
    if numeric:
        whole = parse_number(item)
        stated = [whole] if whole is not None else [Decimal(n) for n in _PLAIN_NUMBER.findall(item)]
        if stated:  # "12 %", "1,200", and both ends of "10-20" (which conversion then reports)
            return {n.copy_abs() for n in stated} <= _numbers(passage)
    return _text_stated(normalise(item), passage, threshold)


def _numbers(passage: str) -> set[Decimal]:
    """Absolute values of the numbers ``passage`` writes, in every reading ("1,200" gives 1, 200 and 1200)."""
    numbers: set[Decimal] = set()
    for reading in _NUMBER_READINGS:
        for match in reading.finditer(passage):
            number = parse_number(match.group())
            if number is not None:
                numbers.add(number.copy_abs())
    return numbers


def _text_stated(value: str, passage: str, threshold: float) -> bool:
    """Whether ``passage`` states ``value``: contains it, nearly contains it, or shares half its content words.

    A description may paraphrase; a name the passage does not contain is invented. Short values must appear
    as whole words: "ro" is not stated by "from".
    """
    if not value:
        return False
    if re.search(rf"(?<!\w){re.escape(value)}(?!\w)", passage):
        return True
    if len(value) >= _MIN_FUZZY_CHARS and fuzz.partial_ratio(value, passage) >= threshold:
        return True
    wanted = {word[:_STEM] for word in keywords(value)}
    present = {word[:_STEM] for word in keywords(passage)}
    return bool(wanted) and 2 * len(wanted & present) >= len(wanted)
