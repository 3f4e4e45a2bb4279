"""pipeline.extractors.heuristic: rows read from a title and cue sentences, every value cited verbatim."""

from contracts import Document, FieldDefinition
from pipeline.extractors.heuristic import HeuristicExtractor
from pipeline.grounding import ground
from pipeline.schema import prepare_schema

DOC = Document(
    id="doc-1",
    title="Evaluation of slow sand filtration for removing Pythium from nursery irrigation water",
    abstract=(
        "Nursery growers recycle irrigation water and spread root pathogens. "
        "We tested slow sand filtration at a flow rate of 300 L/h over two seasons. "
        "The filters removed 99.1% of Pythium propagules. "
        "Operating cost was 0.12 dollars per cubic meter. "
        "Common contaminants such as Pythium, Phytophthora and Fusarium were monitored. "
        "The system did not require chemical inputs."
    ),
    source="local",
    rank=1,
)


def fields(*definitions: tuple[str, str, str]) -> list[FieldDefinition]:
    return [FieldDefinition(name=n, type=t, description=d, required=n == "technology_name") for n, t, d in definitions]  # type: ignore[arg-type]


def extract(*definitions: tuple[str, str, str]):
    """The heuristic's row for DOC after the grounding check every extractor's output goes through."""
    schema = prepare_schema("Tech", fields(*definitions))
    rows, counts = ground(schema, DOC, HeuristicExtractor().rows("water treatment", schema, DOC))
    assert len(rows) == 1 and counts.rejected == 0
    return rows[0]


def test_key_is_the_title_head_phrase_without_lead_in():
    row = extract(("technology_name", "str", "Name of the technology"), ("technology_id", "str", "Identifier"))
    assert row.values["technology_name"] == "Slow sand filtration"
    assert row.values["technology_id"] is None  # identifiers are made from the key in assembly
    by_field = {c.field: c.text_span for c in row.citations}
    assert by_field["technology_name"] == "We tested slow sand filtration at a flow rate of 300 L/h over two seasons."


def test_numbers_booleans_and_lists_come_from_cue_sentences():
    row = extract(
        ("technology_name", "str", ""),
        ("removal_percent", "float", "Percent of pathogen propagules removed"),
        ("flow_rate", "int", "Flow rate in L/h"),
        ("requires_chemicals", "bool", "Whether chemical inputs are required"),
        ("contaminants", "list[str]", "Contaminants monitored"),
        ("notes", "dict", "Anything else"),
    )
    assert row.values["removal_percent"] == 99.1
    assert row.values["flow_rate"] == 300
    assert row.values["requires_chemicals"] is False
    assert row.values["contaminants"] == ["Pythium", "Phytophthora", "Fusarium"]
    assert row.values["notes"] is None


def test_every_citation_is_verbatim_in_the_document():
    row = extract(
        ("technology_name", "str", ""),
        ("cost", "float", "Operating cost per cubic meter"),
        ("contaminants", "list", "Contaminants monitored"),
    )
    text = DOC.title + " " + DOC.abstract
    assert {c.field for c in row.citations} == {"technology_name", "cost", "contaminants"}
    for citation in row.citations:
        assert citation.text_span in text
        assert citation.source_id == "doc-1"
        assert citation.metadata.title == DOC.title


def test_no_row_when_the_title_names_nothing():
    schema = prepare_schema("Tech", fields(("technology_name", "str", "")))
    empty = Document(id="x", title="Of the and for", abstract="Nothing.", source="local")
    assert HeuristicExtractor().rows("q", schema, empty) == []
