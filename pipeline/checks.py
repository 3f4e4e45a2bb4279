"""Row checks: is a grounded candidate row an answer to the question, and is each value about that row?

Grounding proves a quote exists; these checks ask what the quote is about. An extractor that judges its own
rows (the LLM states, per row, whether it answers the question and why) is taken at its word, and a row it
judges off the question is dropped before grounding. Rows nobody judged (the offline extractor's) are checked
lexically after grounding: the key value must be quoted from a passage that states a term of the question's
topic, and every other value from a passage that names the row's key (or the key's own passage): no dose for
reverse osmosis taken from a sentence about sodium.
"""

from __future__ import annotations

from collections import Counter

import msgspec

from contracts import CandidateRow, Document, ExtractedRow, PreparedSchema
from pipeline.grounding import GroundingCounts, SourceText, ground
from pipeline.screening import Topic, stems

#: why rows were dropped, as the dataset's statistics count them
JUDGED_OFF_QUESTION = "judged not to answer the question"
KEY_OFF_TOPIC = "key quoted from a passage off the question's topic"
#: why single values were dropped (the row stays)
VALUE_ABOUT_ANOTHER = "value quoted from a passage not about the row"


def judged(rows: list[ExtractedRow]) -> tuple[list[ExtractedRow], Counter[str]]:
    """The rows whose extractor did not judge them off the question, and the count of those dropped by reason."""
    kept = [r for r in rows if r.answers_question is not False]
    dropped: Counter[str] = Counter()
    if len(kept) < len(rows):
        dropped[JUDGED_OFF_QUESTION] = len(rows) - len(kept)
    return kept, dropped


def ground_and_check(
    subject: Topic, schema: PreparedSchema, document: Document, rows: list[ExtractedRow], *, threshold: float
) -> tuple[list[CandidateRow], GroundingCounts, Counter[str]]:
    """An extractor's rows of ``document`` as candidate rows: those judged off the question dropped, the rest
    grounded, and those nobody judged checked lexically; the grounding counts and the drops by reason."""
    stated, dropped = judged(rows)
    text = SourceText(document)
    judged_rows = [r for r in stated if r.answers_question is not None]
    kept, counts = ground(schema, document, judged_rows, threshold=threshold, text=text)
    unjudged_rows = [r for r in stated if r.answers_question is None]
    unjudged, more_counts = ground(schema, document, unjudged_rows, threshold=threshold, text=text)
    checked, more_dropped = check(subject, schema, unjudged)
    counts.add(more_counts)
    return kept + checked, counts, dropped + more_dropped


def check(subject: Topic, schema: PreparedSchema, rows: list[CandidateRow]) -> tuple[list[CandidateRow], Counter[str]]:
    """The rows (and values) that pass the lexical checks, and what was dropped by reason.

    A row that loses a required value here is dropped as a whole, counted under the value's reason.
    """
    key_field = schema.key_field
    required = {f.name for f in schema.fields if f.required and f.name not in schema.identifier_fields}
    topic_terms = set(subject.words)
    kept: list[CandidateRow] = []
    dropped: Counter[str] = Counter()
    for row in rows:
        if key_field is None or row.values.get(key_field) is None:
            kept.append(row)
            continue
        key_passages = [c.text_span for c in row.citations if c.field == key_field]
        if topic_terms and not any(topic_terms & set(stems(p)) for p in key_passages):
            dropped[KEY_OFF_TOPIC] += 1
            continue
        key_terms = set(stems(str(row.values[key_field])))
        about = [
            c
            for c in row.citations
            if c.field == key_field or c.text_span in key_passages or _names(key_terms, c.text_span)
        ]
        off = {c.field for c in row.citations} - {c.field for c in about}
        if off & required:
            dropped[VALUE_ABOUT_ANOTHER] += 1
            continue
        if off:
            dropped[VALUE_ABOUT_ANOTHER + " (value dropped, row kept)"] += len(off)
            values = {name: (None if name in off else value) for name, value in row.values.items()}
            kept.append(msgspec.structs.replace(row, values=values, citations=about))
        else:
            kept.append(row)
    return kept, dropped


def _names(key_terms: set[str], passage: str) -> bool:
    """Whether ``passage`` names the key: at least half of its content words (by stem)."""
    return bool(key_terms) and 2 * len(key_terms & set(stems(passage))) >= len(key_terms)
