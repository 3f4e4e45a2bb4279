"""pipeline.grounding: each extracted value checked against a quote of its document, repaired, or rejected."""

from __future__ import annotations

import pytest

from contracts import CandidateRow, Document, ExtractedRow, FieldDefinition, FieldValue, Section
from pipeline.grounding import GroundingCounts, SourceText, ground, normalise
from pipeline.schema import prepare_schema

DOC = Document(
    id="doc-1",
    title="Slow sand filtration and reverse osmosis for nursery irrigation water",
    abstract=(
        "Reverse osmosis removed 98.5 % of nitrate from the recycled irrigation water. "
        "The “pilot” system treated 1,200 litres per day at the co‑operative nursery. "
        "Slow sand filtration removed Pythium and Phytophthora propagules from the recirculated water."
    ),
    full_text=(
        "In the second season the filters were operated without chemical treat-\n"
        "ment and the trial ended on 2021-05-03. The reverse osmosis unit needed frequent membrane cleaning."
    ),
    source="local",
    rank=3,
)
RO = "Reverse osmosis removed 98.5 % of nitrate from the recycled irrigation water."
PILOT = "The “pilot” system treated 1,200 litres per day at the co‑operative nursery."
SSF = "Slow sand filtration removed Pythium and Phytophthora propagules from the recirculated water."
TRIAL = "the trial ended on 2021-05-03."

SCHEMA = prepare_schema(
    "Technology",
    [
        FieldDefinition(name="technology_name", type="str", description="Name of the technology"),
        FieldDefinition(name="technology_id", type="str", description="Identifier"),
        FieldDefinition(name="description", type="str", required=False),
        FieldDefinition(name="removal_percent", type="float", required=False),
        FieldDefinition(name="capacity_litres", type="int", required=False),
        FieldDefinition(name="pathogens", type="list[str]", required=False),
        FieldDefinition(name="chemical_free", type="bool", required=False),
        FieldDefinition(name="trial_end", type="date", required=False),
    ],
)


def run(
    values: dict[str, FieldValue], evidence: dict[str, str | None], document: Document = DOC
) -> tuple[list[CandidateRow], GroundingCounts]:
    return ground(SCHEMA, document, [ExtractedRow(values=values, evidence=evidence)])


def one(values: dict[str, FieldValue], evidence: dict[str, str | None]) -> tuple[CandidateRow, GroundingCounts]:
    rows, counts = run(values, evidence)
    assert len(rows) == 1
    return rows[0], counts


def spans(row: CandidateRow) -> dict[str, str]:
    return {c.field: c.text_span for c in row.citations}


def test_schema_roles_are_what_the_tests_assume():
    assert SCHEMA.key_field == "technology_name"
    assert SCHEMA.identifier_fields == ["technology_id"]


def test_exact_quote_is_verified_and_cited_verbatim():
    row, counts = one(
        {"technology_name": "Reverse osmosis", "removal_percent": 98.5},
        {"technology_name": RO, "removal_percent": RO},
    )
    assert row.values["technology_name"] == "Reverse osmosis"
    assert row.values["removal_percent"] == 98.5
    assert spans(row) == {"technology_name": RO, "removal_percent": RO}
    assert row.citations[0].source_id == "doc-1"
    assert row.citations[0].metadata.title == DOC.title
    assert (row.source_id, row.rank, row.flags) == ("doc-1", 3, {})
    assert set(row.values) == {f.name for f in SCHEMA.fields}
    assert counts == GroundingCounts(verified=2)


@pytest.mark.parametrize(
    ("quote", "original"),
    [
        ('the "PILOT"   system treated 1,200 litres per day at the co-operative nursery.', PILOT),
        ("The „pilot“ system\ntreated 1,200 litres per day", "The “pilot” system treated 1,200 litres per day"),
        ("operated without chemical treatment and the trial", "operated without chemical treat-\nment and the trial"),
        ("  REVERSE OSMOSIS removed 98.5 %  ", "Reverse osmosis removed 98.5 %"),
    ],
)
def test_quote_differing_in_form_only_is_verified_and_cites_the_original(quote: str, original: str):
    row, counts = one(
        {"technology_name": "reverse osmosis", "description": quote}, {"technology_name": RO, "description": quote}
    )
    assert spans(row)["description"] == original
    assert counts.verified == 2
    assert counts.repaired == 0


@pytest.mark.parametrize(
    ("typo", "right"), [("Phytophtora", "Phytophthora"), ("remooved", "removed"), ("Pythiun", "Pythium")]
)
def test_one_word_typo_in_a_long_quote_is_repaired_to_the_original_passage(typo: str, right: str):
    quote = SSF.replace(right, typo)
    assert quote != SSF
    row, counts = one({"technology_name": "Slow sand filtration"}, {"technology_name": quote})
    assert spans(row)["technology_name"] == SSF
    assert counts == GroundingCounts(repaired=1)


def test_fabricated_quote_is_rejected_and_its_value_nulled():
    row, counts = one(
        {"technology_name": "Reverse osmosis", "removal_percent": 75},
        {
            "technology_name": RO,
            "removal_percent": "Reverse osmosis removed 75 % of all pathogens in greenhouse trials.",
        },
    )
    assert row.values["removal_percent"] is None
    assert "removal_percent" not in spans(row)
    assert counts == GroundingCounts(verified=1, rejected=1)


@pytest.mark.parametrize("evidence", [None, "", "   ", "RO"])
def test_missing_or_too_short_quote_is_rejected(evidence: str | None):
    row, counts = one(
        {"technology_name": "Reverse osmosis", "description": "reverse osmosis"},
        {"technology_name": RO, "description": evidence},
    )
    assert row.values["description"] is None
    assert counts == GroundingCounts(verified=1, rejected=1)


def test_real_quote_with_an_invented_name_is_rejected_and_the_row_dropped():
    rows, counts = run({"technology_name": "Acme MiracleFilter"}, {"technology_name": RO})
    assert rows == []
    assert counts == GroundingCounts(rejected=1, rows_dropped=1)


@pytest.mark.parametrize(
    ("value", "quote", "kept"),
    [
        (98.5, RO, 98.5),
        ("98.5 %", RO, 98.5),
        (97.0, RO, None),
        (98, RO, None),
        ("about 99", RO, None),
        (1200, PILOT, 1200.0),
        ("1200", PILOT, 1200.0),
    ],
)
def test_number_must_be_written_in_its_quote(value: FieldValue, quote: str, kept: FieldValue):
    row, _ = one(
        {"technology_name": "Reverse osmosis", "removal_percent": value},
        {"technology_name": RO, "removal_percent": quote},
    )
    assert row.values["removal_percent"] == kept


def test_thousands_separated_number_is_verified_as_an_int():
    row, counts = one(
        {"technology_name": "reverse osmosis", "capacity_litres": 1200},
        {"technology_name": RO, "capacity_litres": PILOT},
    )
    assert row.values["capacity_litres"] == 1200
    assert counts == GroundingCounts(verified=2)


def test_an_integer_too_big_for_a_float_is_judged_not_crashed_on():
    row, _ = one(
        {"technology_name": "reverse osmosis", "capacity_litres": 10**5000},  # an LLM may reply with one
        {"technology_name": RO, "capacity_litres": PILOT},
    )
    assert row.values["capacity_litres"] is None  # not stated by the passage


@pytest.mark.parametrize(
    ("description", "kept"),
    [
        ("Removes nitrate from recycled water used for irrigation", True),
        ("membrane-based nitrate removal", True),
        ("Kills bacteria with ultraviolet light in greenhouses", False),
    ],
)
def test_paraphrased_description_is_kept_and_an_unrelated_one_rejected(description: str, kept: bool):
    row, _ = one(
        {"technology_name": "reverse osmosis", "description": description}, {"technology_name": RO, "description": RO}
    )
    assert (row.values["description"] == description) is kept


def test_short_value_must_appear_as_whole_words():
    rows, _ = run({"technology_name": "ro"}, {"technology_name": RO})
    assert rows == []  # "ro" occurs inside "from", which does not state it


def test_list_keeps_only_the_items_its_quote_states():
    row, counts = one(
        {"technology_name": "Slow sand filtration", "pathogens": ["Pythium", "Fusarium", "Phytophthora"]},
        {"technology_name": SSF, "pathogens": SSF},
    )
    assert row.values["pathogens"] == ["Pythium", "Phytophthora"]
    assert counts == GroundingCounts(verified=2)


def test_list_with_no_stated_item_is_rejected():
    row, counts = one(
        {"technology_name": "Slow sand filtration", "pathogens": ["Fusarium"]},
        {"technology_name": SSF, "pathogens": SSF},
    )
    assert row.values["pathogens"] is None
    assert counts == GroundingCounts(verified=1, rejected=1)


@pytest.mark.parametrize(("value", "kept"), [("2021-05-03", "2021-05-03"), ("2020-01-01", None)])
def test_date_needs_its_year_in_the_quote(value: str, kept: str | None):
    row, _ = one(
        {"technology_name": "reverse osmosis", "trial_end": value}, {"technology_name": RO, "trial_end": TRIAL}
    )
    assert row.values["trial_end"] == kept


def test_bool_needs_only_a_real_quote():
    row, _ = one(
        {"technology_name": "reverse osmosis", "chemical_free": "yes"},
        {"technology_name": RO, "chemical_free": "operated without chemical treatment"},
    )
    assert row.values["chemical_free"] is True
    assert spans(row)["chemical_free"] == "operated without chemical treat-\nment"


def test_required_field_rejected_drops_the_row_and_counts_its_values():
    rows, counts = run(
        {"technology_name": "Acme MiracleFilter", "removal_percent": 98.5},
        {"technology_name": "Acme MiracleFilter is the best filter ever made.", "removal_percent": RO},
    )
    assert rows == []
    assert counts == GroundingCounts(verified=1, rejected=1, rows_dropped=1)


def test_row_without_any_value_is_dropped():
    schema = prepare_schema("Note", [FieldDefinition(name="note", type="str", required=False)])
    rows, counts = ground(schema, DOC, [ExtractedRow(values={"note": None}), ExtractedRow()])
    assert rows == []
    assert counts == GroundingCounts(rows_dropped=2)


def test_identifier_field_is_ignored_when_generated_from_the_key():
    row, counts = one(
        {"technology_name": "Reverse osmosis", "technology_id": "made-up-id"},
        {"technology_name": RO, "technology_id": "a quote that is nowhere in the document"},
    )
    assert row.values["technology_id"] is None
    assert "technology_id" not in spans(row)
    assert counts == GroundingCounts(verified=1)


def test_conversion_problem_nulls_the_value_and_flags_it():
    schema = prepare_schema(
        "Tech", [FieldDefinition(name="name", type="str"), FieldDefinition(name="removal", type="int", required=False)]
    )
    rows, counts = ground(
        schema,
        DOC,
        [ExtractedRow(values={"name": "Reverse osmosis", "removal": "98.5"}, evidence={"name": RO, "removal": RO})],
    )
    assert rows[0].values["removal"] is None
    assert rows[0].flags == {"removal": "'98.5' is not an integer"}
    assert [c.field for c in rows[0].citations] == ["name"]
    assert counts == GroundingCounts(verified=1, unconvertible=1)


def test_range_in_a_numeric_field_is_unconvertible_not_rejected():
    doc = Document(id="d", title="Doses", abstract="Plants received 10-20 mg of nitrogen per week.", source="local")
    row = ExtractedRow(
        values={"technology_name": "nitrogen", "removal_percent": "10-20"},
        evidence={"technology_name": doc.abstract, "removal_percent": doc.abstract},
    )
    rows, counts = ground(SCHEMA, doc, [row])
    assert rows[0].flags == {"removal_percent": "could not read '10-20' as a float"}
    assert counts == GroundingCounts(verified=1, unconvertible=1)


def test_several_rows_and_a_shared_source_text():
    text = SourceText(DOC)
    rows, counts = ground(
        SCHEMA,
        DOC,
        [
            ExtractedRow(values={"technology_name": "Reverse osmosis"}, evidence={"technology_name": RO}),
            ExtractedRow(values={"technology_name": "Slow sand filtration"}, evidence={"technology_name": SSF}),
            ExtractedRow(values={"technology_name": "Ozone"}, evidence={"technology_name": SSF}),
        ],
        text=text,
    )
    assert [r.values["technology_name"] for r in rows] == ["Reverse osmosis", "Slow sand filtration"]
    assert counts == GroundingCounts(verified=2, rejected=1, rows_dropped=1)


def test_counts_add_in_place():
    total = GroundingCounts(verified=1, rejected=2)
    total.add(GroundingCounts(verified=3, repaired=1, rejected=1, unconvertible=4, rows_dropped=5))
    assert total == GroundingCounts(verified=4, repaired=1, rejected=3, unconvertible=4, rows_dropped=5)


def test_source_text_find():
    text = SourceText(DOC)
    found = text.find("co-operative nursery", 92.0)
    assert found is not None and found[:2] == ("co‑operative nursery", True)
    assert text.original[found.start : found.end] == found.passage
    assert text.find("an invented sentence about ozone dosing", 92.0) is None
    assert text.find("ro", 92.0) is None
    assert text.original.startswith(DOC.title + "\n" + DOC.abstract)


def test_normalise():
    assert (
        normalise(" The “Pilot”\u00a0co\u2011op-\n  erative  STRASSE re\u00admoves ß cafe\u0301 ‘x’ 1–2 ")
        == "the \"pilot\" co-operative strasse removes ss café 'x' 1-2"
    )


PAGED = Document(
    id="paper.pdf",
    title="Ozone in greenhouses",
    abstract="We dosed ozone.",
    full_text=(
        "1 Introduction\nGreenhouses recycle water. Pathogens spread with it.\n\n"
        "2 Methods\nOzone was dosed at 5 g/m3 for ten minutes. Pythium counts fell by 90 %. Costs were low."
    ),
    pages=[0, 66],
    sections=[Section(heading="1 Introduction", start=0), Section(heading="2 Methods", start=66)],
    source="local",
)


@pytest.mark.parametrize(
    ("quote", "part", "page", "section"),
    [
        ("Pythium counts fell by 90 %.", "full_text", 2, "2 Methods"),
        ("Greenhouses  recycle WATER", "full_text", 1, "1 Introduction"),
        ("we dosed ozone", "abstract", None, None),
        ("Ozone in greenhouses", "title", None, None),
    ],
)
def test_a_citation_points_at_its_passage_in_the_part_page_and_section(
    quote: str, part: str, page: int | None, section: str | None
) -> None:
    text = SourceText(PAGED)
    found = text.find(quote, 92.0)
    assert found is not None
    citation = text.cite("x", found)
    assert (citation.part, citation.page_number, citation.section) == (part, page, section)
    stored = {"title": PAGED.title, "abstract": PAGED.abstract, "full_text": PAGED.full_text or ""}[part]
    assert citation.char_start is not None and citation.char_end is not None
    assert stored[citation.char_start : citation.char_end] == citation.text_span == found.passage


def test_a_citation_carries_one_sentence_of_context_either_side() -> None:
    text = SourceText(PAGED)
    found = text.find("Pythium counts fell by 90 %.", 92.0)
    assert found is not None
    citation = text.cite("x", found)
    assert citation.before == "Ozone was dosed at 5 g/m3 for ten minutes."
    assert citation.after == "Costs were low."
    first = text.cite("x", text.find("Greenhouses recycle water.", 92.0))  # type: ignore[arg-type]
    assert first.before == "1 Introduction" and first.after == "Pathogens spread with it."
