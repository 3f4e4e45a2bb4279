"""Checking requests beyond their shape, and turning field definitions into a row type and its JSON Schema."""

from __future__ import annotations

import datetime
import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

import msgspec

from contracts import Criterion, FieldDefinition, FieldType, GenerateRequest, PreparedSchema
from pipeline.errors import InvalidRequest

MAX_FIELDS = 50
MAX_CRITERIA = 20
MAX_CRITERION_CHARS = 500

PYTHON_TYPES: dict[FieldType, object] = {
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
    check_criteria(request.criteria)


def check_criteria(criteria: list[Criterion]) -> None:
    """At most ``MAX_CRITERIA`` criteria, each a non-empty text of at most ``MAX_CRITERION_CHARS`` characters."""
    if len(criteria) > MAX_CRITERIA:
        raise InvalidRequest("criteria", f"at most {MAX_CRITERIA} criteria, got {len(criteria)}")
    for i, criterion in enumerate(criteria):
        if not criterion.text.strip():
            raise InvalidRequest(f"criteria[{i}].text", "must not be empty")
        if len(criterion.text) > MAX_CRITERION_CHARS:
            raise InvalidRequest(f"criteria[{i}].text", f"at most {MAX_CRITERION_CHARS} characters")


def check_fields(fields: list[FieldDefinition]) -> None:
    """Reject empty, oversized, duplicate or badly named field lists."""
    if not fields:
        raise InvalidRequest("field_definitions", "must hold at least one field")
    if len(fields) > MAX_FIELDS:
        raise InvalidRequest("field_definitions", f"at most {MAX_FIELDS} fields, got {len(fields)}")
    seen: dict[str, str] = {}  # field_key → the name first given
    for i, field in enumerate(fields):
        where = f"field_definitions[{i}].name"
        if not field.name.isidentifier() or field.name.startswith("_"):
            raise InvalidRequest(where, f"must be an identifier (letters, digits, underscore), got {field.name!r}")
        key = field_key(field.name)
        if key in seen:
            message = f"duplicate field name {field.name!r}"
            if seen[key] != field.name:
                message += f": it reads as {seen[key]!r} (names are compared ignoring case and Unicode form)"
            raise InvalidRequest(where, message)
        seen[key] = field.name


def field_key(name: str) -> str:
    """What field names are compared by: ``a``, ``A`` and fullwidth ``ａ`` are one name, and so is ``Å`` composed
    or decomposed; names that differ only so would look alike as CSV headers and JSON keys."""
    return unicodedata.normalize("NFKC", name).casefold()


def schema_field(names: Iterable[str], name: str) -> str | None:
    """The name among ``names`` (checked by ``check_fields``) that ``name`` means: the same text, or else the
    one equal to it by ``field_key``; None when there is none."""
    names = list(names)
    if name in names:
        return name
    key = field_key(name)
    return next((known for known in names if field_key(known) == key), None)


def prepare_schema(model_name: str, fields: list[FieldDefinition]) -> PreparedSchema:
    """Build the prepared schema of checked fields (``check_fields``): field roles plus the JSON Schema of a row."""
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
        python_type = PYTHON_TYPES[field.type]
        if field.required:
            spec.append((field.name, python_type))
        else:
            spec.append((field.name, python_type | None, None))  # type: ignore[operator]
    return msgspec.defstruct(model_name, spec, kw_only=True, forbid_unknown_fields=True)
