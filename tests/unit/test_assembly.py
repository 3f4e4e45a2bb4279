from contracts import CandidateRow, Citation, CitationMetadata, FieldDefinition, GenerateRequest
from pipeline.schema import prepare_schema
from pipeline.stages import assembly

FIELDS = [
    FieldDefinition(name="technology_id", type="str"),
    FieldDefinition(name="technology_name", type="str"),
    FieldDefinition(name="cost", type="float", required=False),
]
SCHEMA = prepare_schema("Tech", FIELDS)


def candidate(name: str | None, source: str, rank: int, cost: float | None = None) -> CandidateRow:
    citation = Citation(
        source_id=source,
        field="technology_name",
        text_span=f"{name} in {source}.",
        metadata=CitationMetadata(title=source),
    )
    return CandidateRow(
        values={"technology_id": None, "technology_name": name, "cost": cost},
        citations=[citation],
        source_id=source,
        rank=rank,
    )


def request(rows: int) -> GenerateRequest:
    return GenerateRequest(user_query="q", field_definitions=FIELDS, rows=rows, model_name="Tech")


def test_rows_with_the_same_normalised_key_merge_and_keep_all_citations():
    candidates = [
        candidate("Reverse osmosis (RO)", "a", 1),
        candidate("reverse osmosis", "b", 2, cost=1.5),
        candidate("Ozonation", "c", 3),
    ]
    dataset = assembly.run("t", request(5), SCHEMA, candidates, documents=3)
    first = dataset.rows[0]
    assert first.row == {"technology_id": "reverse-osmosis", "technology_name": "Reverse osmosis (RO)", "cost": 1.5}
    assert {c.source_id for c in first.citations} == {"a", "b"}
    assert dataset.stats.rows_merged == 1


def test_ranked_by_support_then_completeness_then_rank_and_cut():
    candidates = [
        candidate("Ozonation", "a", 1),
        candidate("Chlorination", "b", 2, cost=0.2),
        candidate("Ultraviolet disinfection", "c", 3),
        candidate("ultraviolet disinfection", "d", 4),
    ]
    dataset = assembly.run("t", request(2), SCHEMA, candidates)
    assert [r.row["technology_name"] for r in dataset.rows] == ["Ultraviolet disinfection", "Chlorination"]
    assert dataset.stats.shortfall is None


def test_missing_required_rows_are_dropped_and_shortfall_is_reported_never_padded():
    candidates = [candidate("Ozonation", "a", 1), candidate(None, "b", 2)]
    dataset = assembly.run("t", request(5), SCHEMA, candidates, documents=2)
    assert len(dataset.rows) == 1
    assert dataset.stats.rows_dropped_missing_required == 1
    assert dataset.stats.returned_rows == 1
    assert dataset.stats.shortfall is not None and "only 1 of 5" in dataset.stats.shortfall
