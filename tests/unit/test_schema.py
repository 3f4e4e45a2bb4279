import datetime
import json
from collections.abc import Mapping

import msgspec
import pytest

from contracts import FIELD_TYPES, FieldDefinition, GenerateRequest
from pipeline.errors import InvalidRequest
from pipeline.schema import check_request, prepare_schema, row_type_for
from services.api.requests import parse_generate_request


def checked(raw: Mapping[str, object], *, max_rows: int) -> GenerateRequest:
    """A request as the API reads it and ``JobService`` checks it before anything is stored."""
    request = parse_generate_request(raw)
    check_request(request, max_rows=max_rows)
    return request


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


def test_prepare_schema_covers_every_type_and_roles():
    fields = [FieldDefinition(name=f"f_{i}", type=t, required=i % 2 == 0) for i, t in enumerate(FIELD_TYPES)]
    fields.append(FieldDefinition(name="crop_name", type="str"))
    fields.append(FieldDefinition(name="record_id", type="str"))
    schema = prepare_schema("Everything", fields)
    assert schema.key_field == "crop_name"
    assert schema.identifier_fields == ["record_id"]
    properties = schema.json_schema["$defs"]["Everything"]["properties"]  # type: ignore[index]
    assert properties["f_9"] == {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}], "default": None}
    assert properties["f_6"] == {"type": "array", "items": {"type": "string"}}
    required = schema.json_schema["$defs"]["Everything"]["required"]  # type: ignore[index]
    assert "f_0" in required and "f_1" not in required


def test_key_field_falls_back_to_first_required_string():
    fields = [FieldDefinition(name="count", type="int"), FieldDefinition(name="crop", type="str")]
    assert prepare_schema("M", fields).key_field == "crop"


def test_row_type_enforces_required_and_types():
    fields = (
        FieldDefinition(name="name", type="str"),
        FieldDefinition(name="year", type="int", required=False),
        FieldDefinition(name="seen", type="date", required=False),
    )
    row_type = row_type_for("Row", fields)
    row = msgspec.convert({"name": "x", "year": None, "seen": "2024-02-29"}, row_type, strict=False)
    assert row.seen == datetime.date(2024, 2, 29)  # type: ignore[attr-defined]
    with pytest.raises(msgspec.ValidationError, match="name"):
        msgspec.convert({"name": None}, row_type)
    with pytest.raises(msgspec.ValidationError, match="year"):
        msgspec.convert({"name": "x", "year": "soon"}, row_type)
