"""pipeline.checks: rows judged off the question are dropped; unjudged rows are checked lexically."""

from __future__ import annotations

from contracts import CandidateRow, Citation, CitationMetadata, ExtractedRow, FieldDefinition
from pipeline.checks import JUDGED_OFF_QUESTION, KEY_OFF_TOPIC, VALUE_ABOUT_ANOTHER, check, judged
from pipeline.schema import prepare_schema
from pipeline.screening import topic

SCHEMA = prepare_schema(
    "Treatments",
    [
        FieldDefinition(name="technology_name", description="Name of the water treatment technology"),
        FieldDefinition(name="dose_mg_per_l", type="float", required=False),
    ],
)
SUBJECT = topic("water treatment technologies used in specialty crop production")


def cite(field: str, text: str) -> Citation:
    return Citation(source_id="d1", field=field, text_span=text, metadata=CitationMetadata(title="t"))


def row(name: str, name_quote: str, dose: float | None = None, dose_quote: str = "") -> CandidateRow:
    citations = [cite("technology_name", name_quote)] + ([cite("dose_mg_per_l", dose_quote)] if dose else [])
    return CandidateRow(
        values={"technology_name": name, "dose_mg_per_l": dose}, citations=citations, source_id="d1", rank=1
    )


def test_rows_the_extractor_judged_off_the_question_are_dropped() -> None:
    kept, dropped = judged([ExtractedRow(answers_question=True), ExtractedRow(answers_question=False), ExtractedRow()])
    assert len(kept) == 2 and dropped == {JUDGED_OFF_QUESTION: 1}


def test_a_key_quoted_off_the_topic_drops_the_row() -> None:
    kept, dropped = check(SUBJECT, SCHEMA, [row("Calibration", "Calibration of capacitance sensors in sandy soils.")])
    assert kept == [] and dropped == {KEY_OFF_TOPIC: 1}


def test_a_value_from_a_passage_about_something_else_is_dropped_and_the_row_kept() -> None:
    about_sodium = row(
        "Reverse osmosis",
        "Reverse osmosis treated brackish irrigation water.",
        6.0,
        "Sodium concentration fell from 40 to 6 mg/L.",
    )
    about_ro = row(
        "Reverse osmosis",
        "Reverse osmosis treated brackish irrigation water.",
        12.0,
        "Reverse osmosis ran at a dose of 12 mg/L antiscalant.",
    )
    kept, dropped = check(SUBJECT, SCHEMA, [about_sodium, about_ro])
    assert [r.values["dose_mg_per_l"] for r in kept] == [None, 12.0]
    assert [c.field for c in kept[0].citations] == ["technology_name"]
    assert dropped == {VALUE_ABOUT_ANOTHER + " (value dropped, row kept)": 1}
