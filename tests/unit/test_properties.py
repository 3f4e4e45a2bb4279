"""Property tests: request parsing, value conversion and the exports hold for any input, not just the examples."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
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
    GenerateRequest,
)
from pipeline.errors import InvalidRequest
from pipeline.export import to_csv, to_json, to_jsonl
from pipeline.schema import MAX_FIELDS, check_request, prepare_schema
from pipeline.values import convert
from services.api.requests import parse_generate_request, parse_reprocess_request

# Deterministic and bounded: the same examples on every run, well under a second each.
bounded = settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

#: cells starting with these are formulas to a spreadsheet (export.py escapes them with a leading quote)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
DEFINITION_KEYS = ("name", "type", "description", "required")
MAX_ROWS = 100
EMPTY_NAME = '""'  # how an error names a field whose name is empty


def checked(raw: Mapping[str, object], *, max_rows: int) -> GenerateRequest:
    """A request as the API reads it and ``JobService`` checks it before anything is stored."""
    request = parse_generate_request(raw)
    check_request(request, max_rows=max_rows)
    return request


# -- strategies ---------------------------------------------------------------------------------------------

ascii_names = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,24}", fullmatch=True)
unicode_names = st.builds(
    str.__add__,
    st.characters(exclude_characters="_").filter(str.isidentifier),
    st.text(st.characters().filter(lambda c: ("a" + c).isidentifier()), max_size=10),
).filter(str.isidentifier)
field_names = st.one_of(ascii_names, unicode_names)

#: text with the characters that break naive CSV and spreadsheets: quotes, separators, newlines, formula starts
tricky_text = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from([*"=+-@'\"\t\r\n,; |:\\", "\u2028", "\x00", "é", "🧪", "1"]), max_size=12),
    st.tuples(st.sampled_from([*FORMULA_START, "'", "''", " ", ""]), st.text(max_size=20)).map("".join),
)


@st.composite
def definitions(draw: st.DrawFn, min_size: int = 1, max_size: int = 8) -> list[dict[str, object]]:
    """Valid field definitions as a client sends them: optional keys sometimes left out."""
    names = draw(st.lists(field_names, min_size=min_size, max_size=max_size, unique=True))
    result: list[dict[str, object]] = []
    for name in names:
        definition: dict[str, object] = {"name": name}
        if draw(st.booleans()):
            definition["type"] = draw(st.sampled_from(FIELD_TYPES))
        if draw(st.booleans()):
            definition["description"] = draw(tricky_text)
        if draw(st.booleans()):
            definition["required"] = draw(st.booleans())
        result.append(definition)
    return result


def as_fields(raw: list[dict[str, object]]) -> list[FieldDefinition]:
    return [FieldDefinition(**d) for d in raw]  # type: ignore[arg-type]


def body(fields: object, *, form: bool, **extra: object) -> dict[str, object]:
    """A generate request as a JSON body (``field_definitions``) or as the seed's form (a JSON string)."""
    base: dict[str, object] = {"user_query": "water treatment", "rows": "5" if form else 5, **extra}
    if form:
        base["field_definitions_json_str"] = json.dumps(fields)
    else:
        base["field_definitions"] = fields
    return base


#: what a JSON document can hold and give back unchanged (so no NaN or infinity)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

# -- (a) field definitions --------------------------------------------------------------------------------


@bounded
@given(raw=definitions(), form=st.booleans())
def test_valid_definitions_round_trip(raw: list[dict[str, object]], form: bool) -> None:
    request = checked(body(raw, form=form), max_rows=MAX_ROWS)
    assert request.field_definitions == as_fields(raw)
    schema = prepare_schema("Row", request.field_definitions)
    properties: dict[str, Any] = schema.json_schema["$defs"]["Row"]["properties"]  # type: ignore[index]
    assert list(properties) == [d["name"] for d in raw]


@settings(max_examples=10, deadline=None, derandomize=True)
@given(types=st.lists(st.sampled_from(FIELD_TYPES), min_size=MAX_FIELDS, max_size=MAX_FIELDS))
def test_the_largest_allowed_schema_is_accepted(types: list[FieldType]) -> None:
    raw = [{"name": f"f{i}", "type": t} for i, t in enumerate(types)]
    request = checked(body(raw, form=False), max_rows=MAX_ROWS)
    assert [f.type for f in request.field_definitions] == types


not_identifiers = st.one_of(
    st.text().filter(lambda s: not s.isidentifier()),
    st.sampled_from(["", "1a", "a b", "a-b", "_hidden", "__class__", "a\n", "é é"]),
)
not_strings = st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.lists(st.integers(), max_size=2))
lone_surrogates = st.tuples(st.text(max_size=4), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)).map("".join)


@st.composite
def one_bad_definition(draw: st.DrawFn) -> tuple[list[object], str]:
    """Valid definitions with exactly one thing wrong, and the ``field`` the error must name."""
    raw: list[object] = list(draw(definitions(min_size=1, max_size=6)))
    i = draw(st.integers(0, len(raw) - 1))
    entry = dict(raw[i])  # type: ignore[call-overload]
    at = f"field_definitions[{i}]"
    kind = draw(
        st.sampled_from(
            ["name", "name_type", "missing_name", "duplicate", "type", "description", "required", "unknown",
             "not_object", "surrogate"]
        )
    )  # fmt: skip
    if kind == "duplicate" and len(raw) < 2:
        kind = "name"
    match kind:
        case "name":
            entry["name"] = draw(not_identifiers)
            where = f"{at}.name"
        case "name_type":
            entry["name"] = draw(not_strings)
            where = f"{at}.name"
        case "missing_name":
            del entry["name"]
            where = at
        case "duplicate":
            j = draw(st.integers(0, len(raw) - 1).filter(lambda j: j != i))
            first, second = min(i, j), max(i, j)
            raw[second] = {**dict(raw[second]), "name": dict(raw[first])["name"]}  # type: ignore[call-overload]
            return raw, f"field_definitions[{second}].name"
        case "type":
            entry["type"] = draw(st.one_of(st.text().filter(lambda s: s not in FIELD_TYPES), not_strings))
            where = f"{at}.type"
        case "description":
            entry["description"] = draw(st.one_of(st.integers(), st.booleans(), st.lists(st.text(), max_size=2)))
            where = f"{at}.description"
        case "required":
            entry["required"] = draw(st.one_of(st.none(), st.sampled_from(["yes", "", "maybe", 2, 0.5, []])))
            where = f"{at}.required"
        case "unknown":
            key = draw(st.text(max_size=10).filter(lambda s: s not in DEFINITION_KEYS))
            entry[key] = draw(json_values)
            where = f"{at}.{key or EMPTY_NAME}"
        case "not_object":
            raw[i] = draw(st.one_of(not_strings, st.text()))
            return raw, at
        case _:
            entry[draw(st.sampled_from(["name", "description"]))] = draw(lone_surrogates)
            where = next(f"{at}.{k}" for k, v in entry.items() if isinstance(v, str) and not _encodable(v))
    raw[i] = entry
    return raw, where


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@bounded
@given(case=one_bad_definition(), form=st.booleans())
@example(case=([{"name": "a", "x - at `$.foo`": 1}], "field_definitions[0].x - at `$.foo`"), form=False)
@example(case=([{"name": "a", "two\nlines": 1}], "field_definitions[0].two\nlines"), form=True)
def test_invalid_definitions_name_the_offending_path(case: tuple[list[object], str], form: bool) -> None:
    raw, where = case
    with pytest.raises(InvalidRequest) as caught:
        checked(body(raw, form=form), max_rows=MAX_ROWS)
    assert caught.value.field == where, str(caught.value)
    assert str(caught.value).startswith(f"{where}: ")


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000 + "]" * 100_000, "[" + "1" * 5000 + "]", '[{"name": "\\ud800"}]', "[{", '{"name": "a"}', "[]", ""],
)
def test_any_field_definitions_json_str_is_parsed_or_refused(text: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        checked({"user_query": "q", "field_definitions_json_str": text}, max_rows=MAX_ROWS)
    assert caught.value.field.startswith("field_definitions")


def test_too_many_fields_are_refused() -> None:
    raw = [{"name": f"f{i}"} for i in range(MAX_FIELDS + 1)]
    with pytest.raises(InvalidRequest) as caught:
        checked(body(raw, form=False), max_rows=MAX_ROWS)
    assert caught.value.field == "field_definitions"


def test_reprocess_reads_form_values_as_generate_does() -> None:
    form = {"from_stage": "search", "sources": "local, openalex", "client_id": "", "rows": "3"}
    change = parse_reprocess_request(form)
    assert (change.sources, change.client_id, change.rows) == (["local", "openalex"], None, 3)


request_keys = st.sampled_from(
    ["user_query", "rows", "model_name", "field_definitions", "field_definitions_json_str", "client_id", "sources",
     "extractor", "from_stage"]
)  # fmt: skip
wild_requests = st.dictionaries(
    st.one_of(request_keys, st.text(max_size=8)),
    st.one_of(json_values, st.floats(), definitions().map(json.dumps), definitions(), lone_surrogates),
    max_size=8,
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(raw=wild_requests)
def test_any_request_is_accepted_or_refused_with_a_field(raw: dict[str, object]) -> None:
    """Never another exception: the API turns InvalidRequest into a 400 naming the field, anything else is a 500."""
    for parse in (lambda: checked(raw, max_rows=MAX_ROWS), lambda: parse_reprocess_request(raw)):
        try:
            parse()
        except InvalidRequest as exc:
            assert exc.field and exc.message
            msgspec.json.encode({"detail": str(exc), "field": exc.field})  # the 400 body can always be sent


# -- value conversion ---------------------------------------------------------------------------------------

stated_values = st.one_of(
    json_values,
    st.from_regex(r"-?\d{1,3}(\.\d+)?[eE][-+]?\d{1,12}", fullmatch=True),  # "1e999999999" must not hang
    st.integers(min_value=-(10**400), max_value=10**400),
)


@settings(max_examples=300, deadline=1000, derandomize=True)
@given(value=stated_values, kind=st.sampled_from(FIELD_TYPES))
def test_conversion_never_raises_and_integers_fit_64_bits(value: Any, kind: FieldType) -> None:
    converted = convert(FieldDefinition(name="a", type=kind), value)
    assert (converted.value is None) or (converted.problem is None)
    items = converted.value if isinstance(converted.value, list) and kind != "dict" else [converted.value]
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            assert -(2**63) <= item < 2**63
    msgspec.json.encode(converted.value)


# -- (b) exports --------------------------------------------------------------------------------------------

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
    assert [h.lstrip("_") for h in header[len(names) :]] == ["sources", "evidence"]
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
