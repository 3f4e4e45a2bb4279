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
_TASK_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MSGSPEC_PATH = re.compile(r" - at `\$([^`]*)`$")  # msgspec paths hold no backticks; field names may
_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `(.*)`", re.DOTALL)
_GENERATE_FIELDS = frozenset(GenerateRequest.__struct_fields__) | {"field_definitions_json_str"}
_REPROCESS_FIELDS = frozenset(ReprocessRequest.__struct_fields__)
_DEFINITION_FIELDS = frozenset(FieldDefinition.__struct_fields__)


class InvalidRequest(ValueError):
    """A request that cannot be run; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_generate_request(raw: Mapping[str, object], *, max_rows: int) -> GenerateRequest:
    """Validate a generate request from a JSON body or the seed's form fields."""
    data = dict(raw)
    check_text(data)
    check_known_fields(data, _GENERATE_FIELDS)
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
        except (ValueError, RecursionError) as exc:  # an integer of over 4300 digits; nesting beyond the stack
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(":")[0]
            raise InvalidRequest("field_definitions_json_str", f"invalid JSON ({reason})") from None
        check_text(data["field_definitions"], "field_definitions")  # "\ud800" escapes decode to lone surrogates
    _read_form_values(data)
    if "user_query" not in data:
        raise InvalidRequest("user_query", "is required")
    if "field_definitions" not in data:
        raise InvalidRequest("field_definitions", "is required")
    if not isinstance(data["field_definitions"], list):
        raise InvalidRequest("field_definitions", "must be a list of field definitions")
    _check_definition_fields(data["field_definitions"])
    try:
        request = msgspec.convert(data, GenerateRequest, strict=False)
    except msgspec.ValidationError as exc:
        raise _as_invalid(exc) from None
    check_request(request, max_rows=max_rows)
    return request


def parse_reprocess_request(raw: Mapping[str, object]) -> ReprocessRequest:
    """Validate a reprocess request body (the overrides are checked against the parent job later)."""
    data = dict(raw)
    check_text(data)
    check_known_fields(data, _REPROCESS_FIELDS)
    if "from_stage" not in data:
        raise InvalidRequest("from_stage", "is required (search, extraction or assembly)")
    _read_form_values(data)
    _check_definition_fields(data.get("field_definitions"))
    try:
        change = msgspec.convert(data, ReprocessRequest, strict=False)
    except msgspec.ValidationError as exc:
        raise _as_invalid(exc) from None
    if change.client_id is not None:
        check_client_id(change.client_id)
    return change


def _read_form_values(data: dict[str, object]) -> None:
    """Form bodies carry lists as comma-separated text and leave optional fields empty (as JSON bodies omit them)."""
    if isinstance(data.get("sources"), str):
        data["sources"] = [s.strip() for s in str(data["sources"]).split(",") if s.strip()]
    for name in ("client_id", "extractor"):
        if data.get(name) == "":
            data[name] = None


def check_text(value: object, path: str = "") -> None:
    """Reject text that cannot be stored: a lone surrogate (a JSON "\\ud800" escape) has no UTF-8 encoding.

    Walks nested lists and dicts without recursion, so any depth the JSON decoder managed is fine.
    """
    pending: list[tuple[str, object]] = [(path, value)]
    while pending:
        where, item = pending.pop()
        if isinstance(item, str):
            if not _encodable(item):
                raise InvalidRequest(where or "body", "is not valid Unicode text (it holds a lone surrogate)")
        elif isinstance(item, Mapping):
            for key, child in item.items():
                name = str(key)
                named = f"{where}.{name}" if where else name
                if not _encodable(name):
                    where_key = named.encode("utf-8", "backslashreplace").decode()
                    raise InvalidRequest(where_key, "this field name is not valid Unicode (it holds a lone surrogate)")
                pending.append((named, child))
        elif isinstance(item, list | tuple):
            pending.extend((f"{where}[{i}]", child) for i, child in enumerate(item))


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def check_known_fields(data: Mapping[str, object], known: frozenset[str], path: str = "") -> None:
    """Name the first field ``data`` has that is not in ``known`` (msgspec's message can be ambiguous about it)."""
    for key in data:
        if key not in known:
            name = str(key) or '""'  # an empty name is still named
            raise InvalidRequest(f"{path}.{name}" if path else name, f"Object contains unknown field `{key}`")


def _check_definition_fields(definitions: object) -> None:
    if isinstance(definitions, list):
        for i, definition in enumerate(definitions):
            if isinstance(definition, Mapping):
                check_known_fields(definition, _DEFINITION_FIELDS, f"field_definitions[{i}]")


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


def is_task_id(text: str) -> bool:
    """Whether ``text`` is a task id: a canonical lowercase UUID, as ``str(uuid.uuid4())`` makes them."""
    return _TASK_ID.fullmatch(text) is not None


def check_task_id(task_id: str) -> None:
    """Refuse anything but a task id before it reaches Redis (``task_id`` names path parameters)."""
    if not is_task_id(task_id):
        raise InvalidRequest("task_id", f"expected a task id (a lowercase UUID), got {task_id[:64]!r}")


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
