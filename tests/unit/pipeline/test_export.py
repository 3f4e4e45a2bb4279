"""pipeline.export: CSV (formula-safe), JSON and JSON Lines exports, by example and for any dataset."""

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
    Citation,
    CitationMetadata,
    Dataset,
    DatasetRow,
    DatasetStats,
    FieldDefinition,
    FieldType,
)
from pipeline.export import to_csv, to_json, to_jsonl
from tests.fixtures.strategies import FORMULA_START, bounded, field_names, json_values, tricky_text


def dataset() -> Dataset:
    fields = [FieldDefinition(name="name"), FieldDefinition(name="tags", type="list[str]", required=False)]
    citation = Citation(source_id="s1", field="name", text_span="=cmd quoted", metadata=CitationMetadata(title="T"))
    rows = [DatasetRow(row={"name": "=HYPERLINK(1)", "tags": ["a", "b"]}, citations=[citation])]
    return Dataset(
        task_id="t",
        model_name="M",
        query="q",
        schema=fields,
        rows=rows,
        stats=DatasetStats(requested_rows=1, returned_rows=1),
    )


def test_csv_has_schema_columns_then_sources_and_evidence_and_is_formula_safe():
    reader = list(csv.reader(io.StringIO(to_csv(dataset()))))
    assert reader[0] == ["name", "tags", "confidence", "sources", "evidence"]
    assert reader[1][0] == "'=HYPERLINK(1)"
    assert reader[1][1] == '["a","b"]'
    assert reader[1][2] == "low"
    assert reader[1][3] == "s1"
    assert reader[1][4] == "name: =cmd quoted"


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
    names = st.one_of(field_names, st.sampled_from(["sources", "evidence", "name", "id"]))
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
    assert [h.lstrip("_") for h in header[len(names) :]] == ["confidence", "sources", "evidence"]
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
        sources = "; ".join(dict.fromkeys(c.metadata.doi or c.source_id for c in cited))
        evidence = " | ".join(dict.fromkeys(f"{c.field}: {c.text_span}" for c in cited))
        assert [unescape(cells[-2]), unescape(cells[-1])] == [sources, evidence]
        assert not cells[-2].startswith(FORMULA_START) and not cells[-1].startswith(FORMULA_START)


@bounded
@given(dataset=datasets())
def test_json_and_jsonl_decode_back_to_the_dataset(dataset: Dataset) -> None:
    assert msgspec.json.decode(to_json(dataset), type=Dataset) == dataset
    assert json.loads(to_json(dataset)) == msgspec.to_builtins(dataset)
    lines = to_jsonl(dataset).split(b"\n")
    assert lines[-1] == b""  # every row ends with a newline, the last too
    assert [msgspec.json.decode(line, type=DatasetRow) for line in lines[:-1]] == dataset.rows


def test_csv_marks_retracted_sources_and_gives_each_quote_its_page():
    retracted = CitationMetadata(title="R", doi="10.1/r", retracted=True)
    cited = [
        Citation(source_id="r", field="name", text_span="Ozone", metadata=retracted, part="full_text", page_number=4),
        Citation(source_id="s", field="tags", text_span="UV", metadata=CitationMetadata(title="S", doi="10.1/s")),
    ]
    base = dataset()
    rows = [msgspec.structs.replace(base.rows[0], citations=cited)]
    reader = list(csv.reader(io.StringIO(to_csv(msgspec.structs.replace(base, rows=rows)))))
    assert reader[1][3] == "10.1/r (retracted); 10.1/s"
    assert reader[1][4] == "name: Ozone (p. 4) | tags: UV"
