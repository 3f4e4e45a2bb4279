"""Validating requests and turning field definitions into a row type and its JSON Schema."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping
from functools import lru_cache

import msgspec

from contracts import FIELD_TYPES, FieldDefinition, FieldType, GenerateRequest, PreparedSchema, ReprocessRequest

MAX_FIELDS = 50

_PYTHON_TYPES: dict[FieldType, object] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "list": list,
    "dict": dict,
    "list[str]": list[str],
    "list[int]": list[int],
    "list[float]": list[float],
    "date": datetime.date,
}

_NAME_LIKE = re.compile(r"^(name|title|label|term)$|_(name|title|label)$")
_IDENTIFIER_LIKE = re.compile(r"^id$|_id$|identifier$")
_CLIENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_MSGSPEC_PATH = re.compile(r" - at `\$(.*)`$")
_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `(.*)`")


class InvalidRequest(ValueError):
    """A request that cannot be run; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_generate_request(raw: Mapping[str, object], *, max_rows: int) -> GenerateRequest:
    """Validate a generate request from a JSON body or the seed's form fields."""
    data = dict(raw)
    if "field_definitions_json_str" in data:
        if "field_definitions" in data:
            raise InvalidRequest("field_definitions", "give field_definitions or field_definitions_json_str, not both")
        text = data.pop("field_definitions_json_str")
        if not isinstance(text, str):
            raise InvalidRequest("field_definitions_json_str", "must be a JSON string")
        try:
            data["field_definitions"] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidRequest("field_definitions_json_str", f"invalid JSON ({exc.msg})") from None
    if isinstance(data.get("sources"), str):  # form bodies carry lists as comma-separated text
        data["sources"] = [s.strip() for s in str(data["sources"]).split(",") if s.strip()]
    for name in ("client_id", "extractor"):
        if data.get(name) == "":
            data[name] = None
    if "user_query" not in data:
        raise InvalidRequest("user_query", "is required")
    if "field_definitions" not in data:
        raise InvalidRequest("field_definitions", "is required")
    if not isinstance(data["field_definitions"], list):
        raise InvalidRequest("field_definitions", "must be a list of field definitions")
    try:
        request = msgspec.convert(data, GenerateRequest, strict=False)
    except msgspec.ValidationError as exc:
        raise _as_invalid(exc) from None
    check_request(request, max_rows=max_rows)
    return request


def parse_reprocess_request(raw: Mapping[str, object]) -> ReprocessRequest:
    """Validate a reprocess request body (the overrides are checked against the parent job later)."""
    if "from_stage" not in raw:
        raise InvalidRequest("from_stage", "is required (search, extraction or assembly)")
    try:
        change = msgspec.convert(dict(raw), ReprocessRequest, strict=False)
    except msgspec.ValidationError as exc:
        raise _as_invalid(exc) from None
    if change.client_id is not None:
        check_client_id(change.client_id)
    return change


def _as_invalid(exc: msgspec.ValidationError) -> InvalidRequest:
    text = str(exc)
    match = _MSGSPEC_PATH.search(text)
    if match is None:
        unknown = _UNKNOWN_FIELD.fullmatch(text)
        return InvalidRequest(unknown.group(1), text) if unknown else InvalidRequest("body", text)
    path = match.group(1).lstrip(".") or "body"
    message = text[: match.start()]
    unknown = _UNKNOWN_FIELD.fullmatch(message)
    if unknown:  # name the unexpected field itself
        path = unknown.group(1) if path == "body" else f"{path}.{unknown.group(1)}"
    if path.endswith(".type"):
        message += f" (expected one of: {', '.join(FIELD_TYPES)})"
    return InvalidRequest(path, message)


def check_client_id(client_id: str) -> None:
    """Client ids name Redis keys and URL paths: keep them short and plain."""
    if not _CLIENT_ID.fullmatch(client_id):
        raise InvalidRequest("client_id", "use 1-128 letters, digits, '.', '_', ':' or '-'")


def check_request(request: GenerateRequest, *, max_rows: int) -> None:
    """Checks msgspec cannot express: non-empty query, row range, identifier names, plain client id."""
    if not request.user_query.strip():
        raise InvalidRequest("user_query", "must not be empty")
    if not 1 <= request.rows <= max_rows:
        raise InvalidRequest("rows", f"must be between 1 and {max_rows}, got {request.rows}")
    if not request.model_name.isidentifier():
        raise InvalidRequest("model_name", f"must be a Python identifier, got {request.model_name!r}")
    if request.client_id is not None:
        check_client_id(request.client_id)
    check_fields(request.field_definitions)


def check_fields(fields: list[FieldDefinition]) -> None:
    """Reject empty, oversized, duplicate or badly named field lists."""
    if not fields:
        raise InvalidRequest("field_definitions", "must hold at least one field")
    if len(fields) > MAX_FIELDS:
        raise InvalidRequest("field_definitions", f"at most {MAX_FIELDS} fields, got {len(fields)}")
    seen: set[str] = set()
    for i, field in enumerate(fields):
        where = f"field_definitions[{i}].name"
        if not field.name.isidentifier() or field.name.startswith("_"):
            raise InvalidRequest(where, f"must be an identifier (letters, digits, underscore), got {field.name!r}")
        if field.name in seen:
            raise InvalidRequest(where, f"duplicate field name {field.name!r}")
        seen.add(field.name)


def prepare_schema(model_name: str, fields: list[FieldDefinition]) -> PreparedSchema:
    """Build the prepared schema: field roles plus the JSON Schema of one row."""
    check_fields(fields)
    row_type = row_type_for(model_name, tuple(fields))
    identifiers = [f.name for f in fields if _IDENTIFIER_LIKE.search(f.name) and f.type in ("str", "int")]
    return PreparedSchema(
        model_name=model_name,
        fields=list(fields),
        json_schema=msgspec.json.schema(row_type),
        key_field=_key_field(fields, identifiers),
        identifier_fields=identifiers,
    )


def _key_field(fields: list[FieldDefinition], identifiers: list[str]) -> str | None:
    strings = [f for f in fields if f.type == "str" and f.name not in identifiers]
    for field in strings:
        if _NAME_LIKE.search(field.name):
            return field.name
    required = [f for f in strings if f.required]
    return required[0].name if required else None


@lru_cache(maxsize=256)
def row_type_for(model_name: str, fields: tuple[FieldDefinition, ...]) -> type[msgspec.Struct]:
    """A msgspec Struct type for one row; optional fields accept null."""
    spec: list[tuple[str, object] | tuple[str, object, object]] = []
    for field in fields:
        python_type = _PYTHON_TYPES[field.type]
        if field.required:
            spec.append((field.name, python_type))
        else:
            spec.append((field.name, python_type | None, None))  # type: ignore[operator]
    return msgspec.defstruct(model_name, spec, kw_only=True, forbid_unknown_fields=True)
