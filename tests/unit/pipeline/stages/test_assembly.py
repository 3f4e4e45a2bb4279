"""pipeline.stages.assembly: candidate rows merged per entity, conflicts resolved by support, ranked and cut."""

import random

import msgspec

from contracts import (
    GENERATED_SOURCE,
    CandidateRow,
    Citation,
    CitationMetadata,
    DatasetRow,
    FieldDefinition,
    FieldValue,
    GenerateRequest,
    JobRecord,
    Paper,
)
from pipeline.schema import prepare_schema, row_type_for
from pipeline.stages import assembly

FIELDS = [
    FieldDefinition(name="technology_id", type="str"),
    FieldDefinition(name="technology_name", type="str"),
    FieldDefinition(name="removal_percent", type="float", required=False),
    FieldDefinition(name="crops", type="list[str]", required=False),
]
SCHEMA = prepare_schema("Tech", FIELDS)
QUERY = "water treatment technologies used in specialty crop production"


def candidate(name: str | None, source: str, rank: int, **values: FieldValue) -> CandidateRow:
    """A candidate row from document ``source`` citing one passage per stated value."""
    row: dict[str, FieldValue] = {"technology_id": None, "technology_name": name, **values}
    citations = [
        Citation(
            source_id=source,
            field=field,
            text_span=f"{source} states {field} = {value}.",
            metadata=CitationMetadata(title=f"Paper {source}", doi=f"10.1/{source}"),
        )
        for field, value in row.items()
        if value is not None
    ]
    return CandidateRow(values=row, citations=citations, source_id=source, rank=rank)


def request(rows: int) -> GenerateRequest:
    return GenerateRequest(user_query=QUERY, field_definitions=FIELDS, rows=rows, model_name="Tech")


def names(dataset_rows: list[DatasetRow]) -> list[FieldValue]:
    return [r.row["technology_name"] for r in dataset_rows]


def test_variants_of_one_entity_across_three_documents_merge_into_one_row():
    candidates = [
        candidate("Reverse osmosis (RO)", "a", 1, removal_percent=97.0),
        candidate("RO", "b", 2, crops=["strawberry"]),
        candidate("reverse-osmosis systems", "c", 3),
        candidate("Constructed wetlands", "d", 4),
        candidate("constructed wetland", "e", 5),
        candidate("Sand filtration", "f", 6),
        candidate("Membrane filtration", "g", 7),
    ]
    dataset = assembly.run("t", request(10), SCHEMA, candidates, documents=7)
    assert names(dataset.rows) == [
        "Reverse osmosis (RO)",
        "Constructed wetlands",
        "Sand filtration",
        "Membrane filtration",
    ]
    first = dataset.rows[0]
    assert first.row == {
        "technology_id": "reverse-osmosis",
        "technology_name": "Reverse osmosis (RO)",
        "removal_percent": 97.0,
        "crops": ["strawberry"],
    }
    assert {c.source_id for c in first.citations} == {"a", "b", "c", GENERATED_SOURCE}
    assert {c.text_span for c in first.citations if c.field == "technology_name"} == {
        "a states technology_name = Reverse osmosis (RO).",
        "b states technology_name = RO.",
        "c states technology_name = reverse-osmosis systems.",
    }
    assert dataset.stats.candidate_rows == 7
    assert dataset.stats.distinct_rows == 4
    assert dataset.stats.rows_merged == 3
    assert dataset.stats.documents_with_rows == 7


def test_a_conflicting_value_is_resolved_by_support_and_the_alternative_kept_with_its_quote():
    candidates = [
        candidate("Ozonation", "a", 1, removal_percent=80.0),  # best ranked, but alone
        candidate("ozonation", "b", 2, removal_percent=90.0),
        candidate("Ozonation", "c", 3, removal_percent=90),
    ]
    dataset = assembly.run("t", request(1), SCHEMA, candidates)
    row = dataset.rows[0]
    assert row.row["removal_percent"] == 90.0
    cited = {c.source_id for c in row.citations if c.field == "removal_percent"}
    assert cited == {"b", "c"}  # the row cites only what it states
    [conflict] = dataset.stats.conflicts
    assert (conflict.row, conflict.field) == ("Ozonation", "removal_percent")
    assert (conflict.chosen.value, conflict.chosen.support, conflict.chosen.sources) == (90.0, 2, ["b", "c"])
    [alternative] = conflict.alternatives
    assert (alternative.value, alternative.support, alternative.sources) == (80.0, 1, ["a"])
    assert [c.text_span for c in alternative.citations] == ["a states removal_percent = 80.0."]


def test_a_tie_in_support_goes_to_the_best_ranked_source():
    candidates = [
        candidate("Ozonation", "b", 2, removal_percent=90.0),
        candidate("Ozonation", "a", 1, removal_percent=80.0),
    ]
    dataset = assembly.run("t", request(1), SCHEMA, candidates)
    assert dataset.rows[0].row["removal_percent"] == 80.0
    assert dataset.stats.conflicts[0].alternatives[0].value == 90.0


def test_ranked_by_support_then_completeness_then_rank_and_cut():
    candidates = [
        candidate("Ozonation", "a", 1),
        candidate("Chlorination", "b", 2, removal_percent=20.0),
        candidate("Ultraviolet disinfection", "c", 3),
        candidate("ultraviolet disinfection", "d", 4),
    ]
    dataset = assembly.run("t", request(2), SCHEMA, candidates)
    assert names(dataset.rows) == ["Ultraviolet disinfection", "Chlorination"]
    assert dataset.stats.shortfall is None


def test_fewer_supported_rows_than_asked_are_reported_and_never_padded():
    candidates = [candidate("Ozonation", "a", 1), candidate(None, "b", 2), candidate("ozonation", "c", 3)]
    dataset = assembly.run("t", request(5), SCHEMA, candidates, documents=3)
    assert names(dataset.rows) == ["Ozonation"]
    assert dataset.stats.rows_dropped_missing_required == 1
    assert dataset.stats.returned_rows == 1
    assert dataset.stats.shortfall is not None
    assert "only 1 of 5" in dataset.stats.shortfall
    assert "1 missing a required field" in dataset.stats.shortfall


def test_generated_ids_are_stable_across_runs_and_marked_as_generated():
    def ids(seed: int) -> dict[FieldValue, FieldValue]:
        candidates = [
            candidate("Drip irrigation filters", "a", 1),
            candidate("Slow sand filtration", "b", 2),
            candidate("UV disinfection", "c", 3),
        ]
        random.Random(seed).shuffle(candidates)
        ranked = [msgspec.structs.replace(c, rank=i) for i, c in enumerate(candidates)]
        dataset = assembly.run("t", request(5), SCHEMA, ranked)
        for row in dataset.rows:
            [generated] = [c for c in row.citations if c.field == "technology_id"]
            assert generated.source_id == GENERATED_SOURCE
            assert str(row.row["technology_name"]) in generated.text_span
        return {r.row["technology_name"]: r.row["technology_id"] for r in dataset.rows}

    first = ids(1)
    assert first == ids(2) == ids(3)
    assert first["Slow sand filtration"] == "slow-sand-filtration"
    int_schema = prepare_schema("Tech", [FieldDefinition(name="tech_id", type="int"), *FIELDS[1:]])
    one = assembly.run("t", request(1), int_schema, [candidate("Ozonation", "a", 1)]).rows[0].row["tech_id"]
    two = assembly.run("u", request(1), int_schema, [candidate("ozonation", "b", 9)]).rows[0].row["tech_id"]
    assert isinstance(one, int) and one == two


def test_every_row_decodes_with_the_schema_row_type_and_only_optional_fields_are_null():
    candidates = [candidate(f"Technology {letter}", letter, i) for i, letter in enumerate("abcdef")]
    dataset = assembly.run("t", request(4), SCHEMA, candidates)
    row_type = row_type_for("Tech", tuple(FIELDS))
    optional = {f.name for f in FIELDS if not f.required}
    for row in dataset.rows:
        msgspec.convert(row.row, row_type, strict=False)
        assert {name for name, value in row.row.items() if value is None} <= optional


def test_without_a_key_field_only_identical_rows_merge():
    fields = [
        FieldDefinition(name="removal_percent", type="float"),
        FieldDefinition(name="crop", type="str", required=False),
    ]
    schema = prepare_schema("Numbers", fields)
    assert schema.key_field is None
    rows = [
        CandidateRow(values={"removal_percent": 90.0, "crop": None}, citations=[], source_id=s, rank=i)
        for i, s in enumerate("ab")
    ] + [CandidateRow(values={"removal_percent": 80.0, "crop": None}, citations=[], source_id="c", rank=3)]
    dataset = assembly.run("t", GenerateRequest(user_query="q", field_definitions=fields, rows=5), schema, rows)
    assert [r.row["removal_percent"] for r in dataset.rows] == [90.0, 80.0]


def test_durations_are_the_finished_stages_plus_the_current_one_so_far():
    job = JobRecord(
        task_id="t",
        client_id="c",
        request=request(1),
        created_at=0,
        updated_at=0,
        stage="assembly",
        stage_entered_at=110.0,
        durations_s={"schema_preparation": 0.5, "search": 2.5, "extraction": 7.0},
    )
    assert assembly.durations(job, now=110.25) == {
        "schema_preparation": 0.5,
        "search": 2.5,
        "extraction": 7.0,
        "assembly": 0.25,
    }


def test_rows_without_a_value_for_an_optional_key_field_are_never_merged_together():
    fields = [FieldDefinition(name="crop_id", type="str"), FieldDefinition(name="crop_name", required=False)]
    schema = prepare_schema("Crops", fields)
    assert schema.key_field == "crop_name"
    rows = [
        CandidateRow(values={"crop_id": None, "crop_name": name}, citations=[], source_id=source, rank=i)
        for i, (name, source) in enumerate([(None, "a"), (None, "b"), ("Basil", "c")])
    ]
    dataset = assembly.run("t", GenerateRequest(user_query="crops", field_definitions=fields, rows=5), schema, rows)
    assert [r.row["crop_name"] for r in dataset.rows] == ["Basil", None, None]  # complete first
    assert len({r.row["crop_id"] for r in dataset.rows}) == 3


def relevant(row: CandidateRow, relevance: float = 1.0, repaired: tuple[str, ...] = ()) -> CandidateRow:
    return msgspec.structs.replace(row, relevance=relevance, repaired=list(repaired))


def test_confidence_rises_with_agreeing_papers_and_falls_with_repaired_quotes_and_conflicts():
    candidates = [
        relevant(candidate("Reverse osmosis", "a", 1, removal_percent=97.0)),
        relevant(candidate("Reverse osmosis", "b", 2, removal_percent=97.0)),
        relevant(candidate("Ozonation", "c", 3, removal_percent=90.0)),
        relevant(candidate("Ozonation", "d", 4, removal_percent=80.0)),
        relevant(candidate("Slow sand filtration", "e", 5), repaired=("technology_name",)),
        relevant(candidate("Chlorination", "f", 6), relevance=0.6),
        relevant(candidate("Chlorination", "g", 7), relevance=0.6),
    ]
    rows = {r.row["technology_name"]: r for r in assembly.run("t", request(5), SCHEMA, candidates).rows}
    ro, ozone, sand, chlorine = (
        rows[n] for n in ("Reverse osmosis", "Ozonation", "Slow sand filtration", "Chlorination")
    )
    assert ro.confidence == "high" and ro.cell_confidence["removal_percent"] == "high"
    assert "2 papers" in ro.basis and "no conflicts" in ro.basis
    assert ozone.cell_confidence["technology_name"] == "high" and ozone.cell_confidence["removal_percent"] == "low"
    assert ozone.confidence == "high"  # the conflict is in an optional column
    assert sand.confidence == "low" and "repaired" in sand.basis
    assert chlorine.cell_confidence["technology_name"] == "high" and chlorine.confidence == "medium"  # 60 %


def test_papers_count_the_rows_citing_them_and_an_empty_result_says_why():
    papers = [
        Paper(id="a", title="A", decision="included", reason="on topic", score=1.0),
        Paper(id="x", title="X", decision="excluded", reason="off", exclusion="off topic"),
    ]
    dataset = assembly.run("t", request(3), SCHEMA, [relevant(candidate("Ozonation", "a", 1))], papers=papers)
    assert [p.rows for p in dataset.papers] == [1, 0]
    assert dataset.stats.flow is not None and dataset.stats.flow.cited == 1 and dataset.stats.flow.read == 1
    assert dataset.stats.flow.excluded_by == {"off topic": 1}

    nothing = [msgspec.structs.replace(p, decision="excluded", exclusion="off topic") for p in papers]
    empty = assembly.run("t", request(3), SCHEMA, [], papers=nothing)
    assert empty.rows == [] and empty.stats.shortfall is not None
    assert empty.stats.shortfall.startswith(f"none of the 2 documents searched in the sources addresses {QUERY!r}")


def test_the_models_reason_is_part_of_the_basis():
    row = msgspec.structs.replace(relevant(candidate("Ozonation", "a", 1)), reason="a water treatment technology")
    (result,) = assembly.run("t", request(1), SCHEMA, [row]).rows
    assert result.basis.endswith("; the model: a water treatment technology")


def test_a_row_citing_a_retracted_paper_is_low_confidence_and_says_so():
    def retract(row: CandidateRow) -> CandidateRow:
        cited = [
            msgspec.structs.replace(c, metadata=msgspec.structs.replace(c.metadata, retracted=True))
            for c in row.citations
        ]
        return msgspec.structs.replace(row, citations=cited)

    candidates = [
        relevant(candidate("Reverse osmosis", "a", 1)),
        relevant(retract(candidate("Reverse osmosis", "b", 2))),
        relevant(candidate("Ozonation", "c", 3)),
        relevant(candidate("Ozonation", "d", 4)),
    ]
    rows = {r.row["technology_name"]: r for r in assembly.run("t", request(2), SCHEMA, candidates).rows}
    assert rows["Ozonation"].confidence == "high"
    assert rows["Reverse osmosis"].confidence == "low"
    assert "cites a retracted paper: Paper b" in rows["Reverse osmosis"].basis
