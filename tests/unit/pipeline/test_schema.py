"""pipeline.schema: field names, the prepared schema (JSON Schema, key and identifier fields) and the row type."""

import datetime
import unicodedata

import msgspec
import pytest

from contracts import FIELD_TYPES, FieldDefinition
from pipeline.errors import InvalidRequest
from pipeline.schema import check_fields, field_key, prepare_schema, row_type_for, schema_field


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


# -- field names: compared ignoring case and Unicode form ---------------------------------------------------

ANGSTROM_NFC = unicodedata.normalize("NFC", "Ångström")
ANGSTROM_NFD = unicodedata.normalize("NFD", "Ångström")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("a", "a"),
        ("a", "ａ"),  # fullwidth
        ("technology_name", "Technology_Name"),
        (ANGSTROM_NFC, ANGSTROM_NFD),
        ("field", "ﬁeld"),  # the "fi" ligature
        ("strasse", "STRAẞE"),  # case folding, not just lower-casing: ẞ folds to "ss"
    ],
)
def test_field_names_that_read_alike_are_duplicates_named_by_their_position(first: str, second: str) -> None:
    fields = [FieldDefinition(name="id"), FieldDefinition(name=first), FieldDefinition(name=second)]
    with pytest.raises(InvalidRequest) as refused:
        check_fields(fields)
    assert refused.value.field == "field_definitions[2].name"
    assert f"duplicate field name {second!r}" in str(refused.value)
    if first != second:
        assert f"it reads as {first!r}" in str(refused.value)


def test_distinct_names_are_kept_as_typed() -> None:
    fields = [FieldDefinition(name=ANGSTROM_NFD), FieldDefinition(name="ångström_error"), FieldDefinition(name="A")]
    check_fields(fields)
    assert [f.name for f in prepare_schema("M", fields).fields] == [ANGSTROM_NFD, "ångström_error", "A"]


def test_a_name_finds_its_field_by_its_text_first_then_by_case_and_form() -> None:
    names = ["Year", ANGSTROM_NFC, "year"]  # "Year" and "year" can only both be in a dataset made before the check
    assert schema_field(names, "year") == "year"
    assert schema_field(names, "YEAR") == "Year"
    assert schema_field(names, ANGSTROM_NFD) == ANGSTROM_NFC
    assert schema_field(names, "ａngström") is None
    assert field_key("ＹＥＡＲ") == field_key("year") == "year"
