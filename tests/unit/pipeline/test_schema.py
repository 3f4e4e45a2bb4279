"""pipeline.schema: the prepared schema (JSON Schema, key and identifier fields) and the row type."""

import datetime

import msgspec
import pytest

from contracts import FIELD_TYPES, FieldDefinition
from pipeline.schema import prepare_schema, row_type_for


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
