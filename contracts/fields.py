"""Column definitions a user asks for, and the schema prepared from them."""

from __future__ import annotations

import typing
from typing import Literal

from contracts.base import Inbound, Record

FieldType = Literal["str", "int", "float", "bool", "list", "dict", "list[str]", "list[int]", "list[float]", "date"]

FIELD_TYPES: tuple[FieldType, ...] = typing.get_args(FieldType)


class FieldDefinition(Inbound, frozen=True, kw_only=True):
    """One column of the requested dataset."""

    name: str
    type: FieldType = "str"
    description: str = ""
    required: bool = True


class PreparedSchema(Record, frozen=True, kw_only=True):
    """Output of schema preparation: the columns, their roles and the JSON Schema of a row."""

    model_name: str
    fields: list[FieldDefinition]
    json_schema: dict[str, object]
    key_field: str | None = None
    identifier_fields: list[str] = []
