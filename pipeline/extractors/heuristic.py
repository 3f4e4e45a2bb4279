"""An extractor that needs no LLM: fills fields from the document's own sentences and cites them."""

from __future__ import annotations

import datetime
import re
import zlib

from contracts import Criterion, Document, ExtractedRow, FieldDefinition, FieldValue, PreparedSchema
from pipeline.extractors.base import Extraction, ExtractorInfo, Screening
from pipeline.text import STOP_WORDS, keywords, normalise_key, sentences, slug

# Lead-ins stripped from a title before taking its head noun phrase ("Evaluation of X for Y" → "X").
_LEAD_IN = re.compile(
    r"^(?:(?:an?|the)\s+)?(?:(?:comparative\s+|field\s+|long-term\s+)?(?:evaluation|assessment|effects?|use|"
    r"performance|comparison|application|analysis|efficacy|effectiveness|impacts?|role|study|review|"
    r"optimi[sz]ation|development|modell?ing)\s+of\s+(?:the\s+|an?\s+)?|(?:assessing|evaluating|comparing|"
    r"using|testing|optimi[sz]ing)\s+(?:the\s+)?)",
    re.IGNORECASE,
)
# Words that end the head noun phrase of a title.
_PHRASE_END = frozenset(
    """for of in on to with from by at as under against during using across and or versus vs via into
    reduces reduce improves improve increases increase removes remove controls control affects affect
    enhances lowers shows achieves is are was were can""".split()
)
_ITEM_END = STOP_WORDS | _PHRASE_END
_GENERIC = frozenset("name names value values number type types identifier id unique main primary the".split())
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?")
_NEGATION = re.compile(r"\b(?:no|not|without|never|none|failed to|did not|does not|cannot|lack(?:s|ed)?)\b", re.I)
_ENUMERATION = re.compile(r"\b(?:such as|including|namely|like)\s+([^.;:]+)", re.I)
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_MAX_PHRASE_WORDS = 6


class HeuristicExtractor:
    """One row per document: the title's head noun phrase as the key, other fields from cue sentences."""

    name = "heuristic"
    version = "2"
    cached = False  # a few milliseconds of CPU: cheaper than a Redis round trip

    def info(self) -> ExtractorInfo:
        """Runs here, with no model behind it."""
        return ExtractorInfo(name=self.name)

    async def extract(self, query: str, schema: PreparedSchema, document: Document) -> Extraction:
        """The rows of ``document`` (at most one); CPU work of a few milliseconds, so it runs inline."""
        return Extraction(rows=self.rows(query, schema, document))

    async def screen(self, query: str, criteria: list[Criterion], documents: list[Document]) -> Screening:
        """No judgement beyond the search's lexical screening."""
        return Screening()

    async def close(self) -> None:
        """Nothing to release."""

    def rows(self, query: str, schema: PreparedSchema, document: Document) -> list[ExtractedRow]:
        """A row from ``document`` quoting the sentence behind each value, or none when it names no key."""
        passages = [document.title, *sentences(document.abstract)]
        if document.full_text:
            passages += sentences(document.full_text)
        values: dict[str, FieldValue] = {}
        evidence: dict[str, str | None] = {}
        if schema.key_field is not None:
            found = _key_phrase(document.title, passages)
            if found is None:
                return []
            values[schema.key_field], evidence[schema.key_field] = found
        generated = set(schema.identifier_fields) if schema.key_field else set()  # made from the key in assembly
        for field in schema.fields:
            if field.name == schema.key_field or field.name in generated:
                continue
            filled = _fill(field, passages[1:] or passages)
            if filled is not None:
                values[field.name], evidence[field.name] = filled
        return [ExtractedRow(values=values, evidence=evidence)] if values else []


def make_identifier(field: FieldDefinition, key_value: str) -> FieldValue:
    """A deterministic identifier from a key value: the same thing always gets the same id."""
    if field.type == "int":
        return zlib.crc32(normalise_key(key_value).encode()) % 1_000_000
    return slug(key_value)


def _key_phrase(title: str, passages: list[str]) -> tuple[str, str] | None:
    """The title's head noun phrase and the passage to cite for it (an abstract sentence when one names it)."""
    head = _LEAD_IN.sub("", title.strip())
    phrase_words: list[str] = []
    for token in re.split(r"\s+", head):
        bare = token.strip(",;:()").lower()
        if bare in _PHRASE_END or not bare:
            break
        phrase_words.append(token.strip(",;:"))
        if token.endswith((",", ";", ":")) or len(phrase_words) == _MAX_PHRASE_WORDS:
            break
    phrase = " ".join(phrase_words).strip()
    if not phrase or phrase.lower() in STOP_WORDS:
        return None
    lowered = phrase.lower()
    passage = next((p for p in passages[1:] if lowered in p.lower()), passages[0])
    return phrase[0].upper() + phrase[1:], passage


def _field_keywords(field: FieldDefinition) -> list[str]:
    words = keywords(field.name.replace("_", " ") + " " + field.description)
    return [w for w in words if w not in _GENERIC]


def _best_passage(field: FieldDefinition, passages: list[str], wanted: re.Pattern[str] | None) -> str | None:
    """The passage with most of the field's keywords (by word stem) that also matches ``wanted``."""
    stems = {w[:5] for w in _field_keywords(field)}
    if not stems:
        return None
    best, best_hits = None, 0
    for passage in passages:
        if wanted is not None and not wanted.search(passage):
            continue
        hits = len(stems & {w[:5] for w in keywords(passage)})
        if hits > best_hits:
            best, best_hits = passage, hits
    return best


def _fill(field: FieldDefinition, passages: list[str]) -> tuple[FieldValue, str] | None:
    """A value for ``field`` and the passage it came from, or None when the text does not state one."""
    kind = field.type
    if kind in ("int", "float"):
        passage = _best_passage(field, passages, _NUMBER)
        if passage is None:
            return None
        number = _nearest_number(field, passage)
        if kind == "int":
            if not number.is_integer():
                return None
            return int(number), passage
        return number, passage
    if kind == "bool":
        passage = _best_passage(field, passages, None)
        return None if passage is None else (not _NEGATION.search(passage), passage)
    if kind in ("list", "list[str]"):
        passage = _best_passage(field, passages, _ENUMERATION)
        if passage is None:
            return None
        match = _ENUMERATION.search(passage)
        assert match is not None
        parts = re.split(r",\s*(?:and\s+|or\s+)?|\s+(?:and|or)\s+", match.group(1))
        items: list[object] = [item for part in parts if (item := _until_stop_word(part))]
        return (items, passage) if items else None
    if kind in ("list[int]", "list[float]"):
        passage = _best_passage(field, passages, _NUMBER)
        if passage is None:
            return None
        numbers = [float(n.replace(",", "")) for n in _NUMBER.findall(passage)]
        found: list[object] = [int(n) for n in numbers if n.is_integer()] if kind == "list[int]" else list(numbers)
        return found, passage
    if kind == "date":
        passage = _best_passage(field, passages, _ISO_DATE)
        if passage is None:
            return None
        match = _ISO_DATE.search(passage)
        assert match is not None
        try:
            return datetime.date(*map(int, match.groups())).isoformat(), passage
        except ValueError:
            return None
    if kind == "str":
        passage = _best_passage(field, passages, None)
        return None if passage is None else (passage, passage)
    return None  # dict: nothing a sentence states reliably


def _until_stop_word(item: str) -> str:
    """An enumerated item without the clause that follows it ("Fusarium were monitored" → "Fusarium")."""
    kept: list[str] = []
    for word in item.split():
        if kept and word.lower() in _ITEM_END:
            break
        kept.append(word)
    return " ".join(kept).strip()


def _nearest_number(field: FieldDefinition, passage: str) -> float:
    """The number in ``passage`` closest to one of the field's keywords."""
    lowered = passage.lower()
    anchors = [m.start() for w in _field_keywords(field) for m in re.finditer(re.escape(w[:5]), lowered)]
    numbers = list(_NUMBER.finditer(passage))
    best = min(numbers, key=lambda m: min(abs(m.start() - a) for a in anchors)) if anchors else numbers[0]
    return float(best.group().replace(",", ""))
