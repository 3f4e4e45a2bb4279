"""pipeline.export: CSV (formula-safe), JSON and JSON Lines exports, the citations table and the papers, by example
and for any dataset; reviewed datasets (excluded rows, rejected and edited cells)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from contracts import (
    FIELD_TYPES,
    GENERATED_SOURCE,
    CellReview,
    Citation,
    CitationMetadata,
    Dataset,
    DatasetRow,
    DatasetStats,
    FieldDefinition,
    FieldType,
    Paper,
    RowReview,
)
from pipeline.export import CITATION_COLUMNS, CitationLine, export_citations, export_papers, to_csv, to_json, to_jsonl
from tests.fixtures.strategies import FORMULA_START, bounded, field_names, json_values, tricky_text

EXTRAS = ["confidence", "sources", "evidence", "support", "review", "row_id"]


def dataset() -> Dataset:
    fields = [FieldDefinition(name="name"), FieldDefinition(name="tags", type="list[str]", required=False)]
    paper = CitationMetadata(title="T", authors=["Ada Smith"], year=2021)
    citation = Citation(source_id="s1", field="name", text_span="=cmd quoted", metadata=paper)
    rows = [DatasetRow(row={"name": "=HYPERLINK(1)", "tags": ["a", "b"]}, citations=[citation], row_id="=r1")]
    return Dataset(
        task_id="t",
        model_name="M",
        query="q",
        schema=fields,
        rows=rows,
        stats=DatasetStats(requested_rows=1, returned_rows=1),
    )


def test_csv_has_schema_columns_then_the_extras_and_is_formula_safe():
    reader = list(csv.reader(io.StringIO(to_csv(dataset()))))
    assert reader[0] == ["name", "tags", *EXTRAS]
    assert reader[1] == ["'=HYPERLINK(1)", '["a","b"]', "low", "Smith 2021", "name: =cmd quoted", "1", "", "'=r1"]


def test_jsonl_has_one_row_per_line():
    lines = to_jsonl(dataset()).splitlines()
    assert len(lines) == 1
    assert msgspec.json.decode(lines[0])["row"]["name"] == "=HYPERLINK(1)"


# -- any dataset ----------------------------------------------------------------------------------------------

_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "str": tricky_text,
    "int": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "float": st.floats(allow_nan=False, allow_infinity=False),
    "bool": st.booleans(),
    "list": st.lists(tricky_text, max_size=3),
    "list[str]": st.lists(tricky_text, max_size=3),
    "list[int]": st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=3),
    "list[float]": st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=3),
    "dict": st.dictionaries(tricky_text, json_values, max_size=3),
    "date": st.dates().map(lambda d: d.isoformat()),
}

citations = st.builds(
    Citation,
    source_id=st.one_of(st.just(GENERATED_SOURCE), tricky_text),
    field=tricky_text,
    text_span=tricky_text,
    metadata=st.builds(CitationMetadata, title=tricky_text, doi=st.one_of(st.none(), tricky_text)),
)


@st.composite
def datasets(draw: st.DrawFn) -> Dataset:
    names = st.one_of(field_names, st.sampled_from([*EXTRAS, "name", "id"]))
    schema = [
        FieldDefinition(name=name, type=draw(st.sampled_from(FIELD_TYPES)), required=draw(st.booleans()))
        for name in draw(st.lists(names, min_size=1, max_size=6, unique=True))
    ]
    rows = []
    for _ in range(draw(st.integers(0, 4))):
        row = {f.name: draw(_VALUES[f.type] if f.required else st.one_of(st.none(), _VALUES[f.type])) for f in schema}
        rows.append(DatasetRow(row=row, citations=draw(st.lists(citations, max_size=3))))
    return Dataset(
        task_id="t",
        model_name="Row",
        query=draw(tricky_text),
        schema=schema,
        rows=rows,
        stats=DatasetStats(requested_rows=len(rows), returned_rows=len(rows)),
    )


def unescape(cell: str) -> str:
    """What export.py documents: a text cell starting with a quote had one added; stripping it gives the text."""
    return cell[1:] if cell.startswith("'") else cell


def read_cell(cell: str, kind: FieldType) -> object:
    """A CSV cell back as the value (an empty cell is a missing value or an empty string: CSV cannot tell)."""
    if cell == "":
        return None
    match kind:
        case "int":
            return int(cell)
        case "float":
            return float(cell)
        case "bool":
            assert cell in ("true", "false")
            return cell == "true"
        case "list" | "list[str]" | "list[int]" | "list[float]" | "dict":
            return json.loads(unescape(cell))
        case _:
            return unescape(cell)


@bounded
@given(dataset=datasets())
def test_csv_reads_back_as_the_dataset(dataset: Dataset) -> None:
    text = to_csv(dataset)
    lines = list(csv.reader(io.StringIO(text)))
    names = [f.name for f in dataset.schema]
    header, body_rows = lines[0], lines[1:]
    assert header[: len(names)] == names
    assert [h.lstrip("_") for h in header[len(names) :]] == EXTRAS
    assert len(set(header)) == len(header)
    assert len(body_rows) == len(dataset.rows)
    for row, cells in zip(dataset.rows, body_rows, strict=True):
        assert len(cells) == len(header)
        for field, cell in zip(dataset.schema, cells, strict=False):
            value = row.row.get(field.name)
            expected = None if value == "" else value
            assert read_cell(cell, field.type) == expected, (field, cell)
            if field.type in ("str", "date", "list", "list[str]", "list[int]", "list[float]", "dict"):
                assert not cell.startswith(FORMULA_START), cell
        cited = [c for c in row.citations if c.source_id != GENERATED_SOURCE]
        extra = dict(zip(EXTRAS, cells[len(names) :], strict=True))
        evidence = " | ".join(dict.fromkeys(f"{c.field}: {c.text_span}" for c in cited))
        assert unescape(extra["evidence"]) == evidence
        assert int(extra["support"]) == len({c.source_id for c in cited})
        assert (extra["sources"] == "") == (not cited)
        assert extra["review"] == "" and extra["row_id"] == row.row_id
        for name in ("sources", "evidence"):
            assert not extra[name].startswith(FORMULA_START), extra[name]


@bounded
@given(dataset=datasets())
def test_json_and_jsonl_decode_back_to_the_dataset(dataset: Dataset) -> None:
    assert msgspec.json.decode(to_json(dataset), type=Dataset) == dataset
    assert json.loads(to_json(dataset)) == msgspec.to_builtins(dataset)
    lines = to_jsonl(dataset).split(b"\n")
    assert lines[-1] == b""  # every row ends with a newline, the last too
    assert [msgspec.json.decode(line, type=DatasetRow) for line in lines[:-1]] == dataset.rows


def test_csv_marks_retracted_sources_and_gives_each_quote_its_page():
    retracted = CitationMetadata(title="R", doi="10.1/r", authors=["Lee, Min", "Kim, Jae"], year=2020, retracted=True)
    cited = [
        Citation(source_id="r", field="name", text_span="Ozone", metadata=retracted, part="full_text", page_number=4),
        Citation(source_id="s", field="tags", text_span="UV", metadata=CitationMetadata(title="S", doi="10.1/s")),
    ]
    base = dataset()
    rows = [msgspec.structs.replace(base.rows[0], citations=cited)]
    reader = list(csv.reader(io.StringIO(to_csv(msgspec.structs.replace(base, rows=rows)))))
    assert reader[1][3] == "Lee & Kim 2020 (retracted); S n.d."
    assert reader[1][4] == "name: Ozone (p. 4) | tags: UV"
    assert reader[1][5] == "2"


# -- reviewed datasets and the citations table -----------------------------------------------------------------

SMITH = CitationMetadata(title="Ozone for drip lines", authors=["Jan Smith", "Li Wei", "Ana Costa"], year=2021)
SMITH_TOO = CitationMetadata(title="Ozone again", authors=["Jan Smith", "Bo Lee", "Kai Ito"], year=2021, doi="10.1/b")
LEE = CitationMetadata(title="UV in greenhouses", authors=["Bo Lee", "Ann Park"], year=2020, venue="Water Res.")
GONE = CitationMetadata(title="Excluded paper", authors=["Eve Gone"], year=2019)


def cite(source_id: str, field: str, quote: str, paper: CitationMetadata, page: int | None = None) -> Citation:
    return Citation(source_id=source_id, field=field, text_span=quote, metadata=paper, page_number=page)


def reviewed() -> Dataset:
    """Three rows: one with an edited and an approved cell, one with a rejected cell, one excluded."""
    schema = [FieldDefinition(name="name"), FieldDefinition(name="cost", type="float", required=False)]
    generated = cite(GENERATED_SOURCE, "id", "made by litminer", CitationMetadata(title="Identifier"))
    first = DatasetRow(
        row_id="ozone",
        row={"name": "Ozone", "cost": 12.5},
        citations=[generated, cite("a", "name", "Ozone", SMITH, page=3), cite("b", "cost", "-12 USD", SMITH_TOO)],
        confidence="high",
        review=RowReview(
            cells={
                "cost": CellReview(status="edited", original=12.0),
                "name": CellReview(status="approved", original="Ozone"),
            }
        ),
    )
    second = DatasetRow(
        row_id="uv",
        row={"name": "UV", "cost": None},
        citations=[cite("c", "name", "UV lamps", LEE), cite("a", "cost", "=SUM(A1)", SMITH)],
        review=RowReview(cells={"cost": CellReview(status="rejected", original=3.0)}),
    )
    third = DatasetRow(
        row_id="gone",
        row={"name": "Gone"},
        citations=[cite("g", "name", "Gone", GONE)],
        review=RowReview(excluded=True),
    )
    papers = [
        Paper(id=source, title=title, decision="included", reason="r", rows=rows)
        for source, title, rows in [("a", "A", 2), ("b", "B", 1), ("c", "C", 1), ("g", "G", 1)]
    ]
    return Dataset(
        task_id="t",
        model_name="M",
        query="q",
        schema=schema,
        rows=[first, second, third],
        papers=papers,
        stats=DatasetStats(requested_rows=3, returned_rows=3),
    )


def test_csv_of_a_reviewed_dataset_leaves_out_excluded_rows_and_rejected_quotes_and_says_what_was_reviewed():
    lines = list(csv.DictReader(io.StringIO(to_csv(reviewed()))))
    assert [line["row_id"] for line in lines] == ["ozone", "uv"]
    ozone, uv = lines
    assert ozone["cost"] == "12.5" and uv["cost"] == ""
    # two Smith 2021 papers get a and b; "Smith et al." as both have three authors
    assert ozone["sources"] == "Smith et al. 2021a; Smith et al. 2021b"
    assert ozone["evidence"] == "name: Ozone (p. 3) | cost: -12 USD"
    assert ozone["support"] == "2" and ozone["confidence"] == "high"
    assert ozone["review"] == "name: approved; cost: edited"  # schema order
    # the rejected cost's quote (from Smith 2021a) backs nothing: not a source, not evidence, not support
    assert uv["sources"] == "Lee & Park 2020" and uv["evidence"] == "name: UV lamps"
    assert uv["support"] == "1" and uv["review"] == "cost: rejected"


def test_citations_table_has_one_line_per_citation_of_a_value_with_its_review_and_paper():
    table = list(csv.reader(io.StringIO(export_citations(reviewed(), "csv").decode())))
    header, body = table[0], [dict(zip(table[0], line, strict=True)) for line in table[1:]]
    assert header == list(CITATION_COLUMNS)
    assert header[:8] == ["row_id", "field", "value", "review", "quote", "page", "section", "source_id"]
    # no generated identifier, nothing of the excluded row; the rejected cell's quote is listed, as rejected
    assert [(b["row_id"], b["field"], b["source_id"], b["review"]) for b in body] == [
        ("ozone", "name", "a", "approved"),
        ("ozone", "cost", "b", "edited"),
        ("uv", "name", "c", ""),
        ("uv", "cost", "a", "rejected"),
    ]
    assert body[1]["value"] == "12.5" and body[3]["value"] == ""  # the reviewed values
    assert body[0]["page"] == "3" and body[1]["page"] == ""
    assert body[0]["authors"] == "Jan Smith; Li Wei; Ana Costa" and body[0]["year"] == "2021"
    assert body[1]["doi"] == "10.1/b" and body[2]["venue"] == "Water Res." and body[2]["retracted"] == "false"
    # quotes that look like formulas stay text
    assert body[1]["quote"] == "'-12 USD" and body[3]["quote"] == "'=SUM(A1)"


def test_citations_jsonl_holds_the_same_lines_typed():
    lines = export_citations(reviewed(), "jsonl").splitlines()
    decoded = [msgspec.json.decode(line, type=CitationLine) for line in lines]
    assert [(c.row_id, c.field, c.value, c.review) for c in decoded] == [
        ("ozone", "name", "Ozone", "approved"),
        ("ozone", "cost", 12.5, "edited"),
        ("uv", "name", "UV", None),
        ("uv", "cost", None, "rejected"),
    ]
    assert decoded[0].authors == SMITH.authors and decoded[3].quote == "=SUM(A1)"  # JSON needs no escaping
    assert list(json.loads(lines[0])) == list(CITATION_COLUMNS)


def test_papers_count_only_the_rows_no_reviewer_excluded():
    papers = msgspec.json.decode(export_papers(reviewed(), "json"), type=list[Paper])
    # "a" backs only the ozone row now (its uv quote is of a rejected cell); "g" is cited by the excluded row only
    assert {p.id: p.rows for p in papers} == {"a": 1, "b": 1, "c": 1, "g": 0}
    table = list(csv.DictReader(io.StringIO(export_papers(reviewed(), "csv").decode())))
    assert [line["rows"] for line in table] == ["1", "1", "1", "0"]


def test_json_and_jsonl_of_the_dataset_keep_excluded_rows():
    dataset = reviewed()
    assert len(msgspec.json.decode(to_json(dataset), type=Dataset).rows) == 3
    assert len(to_jsonl(dataset).splitlines()) == 3


def test_the_underscore_rule_holds_for_every_extra_column():
    schema = [FieldDefinition(name=name, required=False) for name in EXTRAS]
    header = next(csv.reader(io.StringIO(to_csv(msgspec.structs.replace(reviewed(), schema=schema)))))
    assert header == [*EXTRAS, *(f"_{name}" for name in EXTRAS)]
