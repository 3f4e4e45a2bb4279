"""services.api.requests: generate and reprocess bodies (JSON or form) read, then checked as JobService does."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from contracts import FIELD_TYPES, FieldDefinition, FieldType, GenerateRequest
from pipeline.errors import InvalidRequest
from pipeline.schema import MAX_FIELDS, check_request, field_key, prepare_schema
from services.api.requests import parse_generate_request, parse_reprocess_request
from tests.fixtures.strategies import bounded, field_names, json_values, tricky_text

DEFINITION_KEYS = ("name", "type", "description", "required")
MAX_ROWS = 100
EMPTY_NAME = '""'  # how an error names a field whose name is empty


def checked(raw: Mapping[str, object], *, max_rows: int) -> GenerateRequest:
    """A request as the API reads it and ``JobService`` checks it before anything is stored."""
    request = parse_generate_request(raw)
    check_request(request, max_rows=max_rows)
    return request


# -- the seed's form and JSON bodies, by example --------------------------------------------------------------

SEED_FIELDS = [
    {"name": "technology_id", "type": "str", "description": "Unique identifier", "required": True},
    {"name": "technology_name", "type": "str", "description": "Name of technology", "required": True},
]


def seed_form(**changes: object) -> dict[str, object]:
    form: dict[str, object] = {
        "user_query": "water treatment technologies used in specialty crop production",
        "rows": "5",
        "model_name": "TreatmentTechnologies",
        "field_definitions_json_str": json.dumps(SEED_FIELDS),
        "client_id": "test-client-id-1",
    }
    form.update(changes)
    return form


def test_seed_form_is_accepted():
    request = checked(seed_form(), max_rows=100)
    assert request.rows == 5
    assert [f.name for f in request.field_definitions] == ["technology_id", "technology_name"]
    assert request.client_id == "test-client-id-1"


def test_json_body_with_field_list_is_accepted():
    body = {"user_query": "q", "rows": 3, "model_name": "M", "field_definitions": SEED_FIELDS, "sources": ["local"]}
    request = checked(body, max_rows=100)
    assert request.rows == 3 and request.sources == ["local"] and request.client_id is None


def test_required_defaults_to_true():
    body = {"user_query": "q", "field_definitions": [{"name": "a"}]}
    assert checked(body, max_rows=100).field_definitions[0].required is True


many_fields = json.dumps([{"name": f"f{i}", "type": "str"} for i in range(51)])


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"field_definitions_json_str": "[{not json"}, "field_definitions_json_str"),
        ({"field_definitions_json_str": '{"name": "a"}'}, "field_definitions"),
        ({"field_definitions_json_str": "[]"}, "field_definitions"),
        ({"field_definitions_json_str": many_fields}, "field_definitions"),
        ({"field_definitions_json_str": '[{"name": "a"}, {"name": "a"}]'}, "field_definitions[1].name"),
        ({"field_definitions_json_str": '[{"name": "a b"}]'}, "field_definitions[0].name"),
        ({"field_definitions_json_str": '[{"name": "1a"}]'}, "field_definitions[0].name"),
        ({"field_definitions_json_str": '[{"name": "a", "type": "decimal"}]'}, "field_definitions[0].type"),
        ({"field_definitions_json_str": '[{"name": "a", "colour": "red"}]'}, "field_definitions[0].colour"),
        ({"rows": "0"}, "rows"),
        ({"rows": "101"}, "rows"),
        ({"rows": "many"}, "rows"),
        ({"user_query": "   "}, "user_query"),
        ({"model_name": "Treatment Technologies"}, "model_name"),
        ({"model_name": "1Model"}, "model_name"),
        ({"client_id": "bad id/with slash"}, "client_id"),
        ({"extractor": "magic"}, "extractor"),
    ],
)
def test_bad_input_names_the_field(changes, field):
    with pytest.raises(InvalidRequest) as caught:
        checked(seed_form(**changes), max_rows=100)
    assert caught.value.field == field
    assert str(caught.value).startswith(field + ":")


def test_unknown_type_error_lists_the_allowed_types():
    with pytest.raises(InvalidRequest, match="list\\[float\\]"):
        checked(seed_form(field_definitions_json_str='[{"name": "a", "type": "decimal"}]'), max_rows=100)


def test_max_rows_is_configurable():
    assert checked(seed_form(rows="150"), max_rows=200).rows == 150


# -- field definitions and requests, any of them --------------------------------------------------------------


@st.composite
def definitions(draw: st.DrawFn, min_size: int = 1, max_size: int = 8) -> list[dict[str, object]]:
    """Valid field definitions as a client sends them: optional keys sometimes left out."""
    names = draw(st.lists(field_names, min_size=min_size, max_size=max_size, unique_by=field_key))
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
