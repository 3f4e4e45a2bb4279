"""Reading request bodies: JSON or form fields, their quirks, and messages that name the field.

This gives a request its shape (a ``contracts`` Struct); ``JobService`` then checks what the shape cannot say
(row range, field names, known sources) once, before anything is stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import msgspec
from litestar import Request
from litestar.datastructures import State
from litestar.exceptions import ClientException

from contracts import FIELD_TYPES, FieldDefinition, GenerateRequest, ReprocessRequest, ReviewChange
from pipeline.errors import InvalidRequest

_MSGSPEC_PATH = re.compile(r" - at `\$([^`]*)`$")  # msgspec paths hold no backticks; field names may
_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `(.*)`", re.DOTALL)
_GENERATE_FIELDS = frozenset(GenerateRequest.__struct_fields__) | {"field_definitions_json_str"}
_REPROCESS_FIELDS = frozenset(ReprocessRequest.__struct_fields__)
_DEFINITION_FIELDS = frozenset(FieldDefinition.__struct_fields__)
_REVIEW_FIELDS = frozenset(ReviewChange.__struct_fields__)


async def read_body(request: Request[object, object, State]) -> dict[str, object]:
    """The fields of a JSON or a form-urlencoded (or multipart) body."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError) as exc:  # also integers of over 4300 digits, and nesting past the stack
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise InvalidRequest("body", f"invalid JSON ({reason})") from None
        if not isinstance(body, dict):
            raise InvalidRequest("body", "must be a JSON object")
        return body
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        try:
            form = await request.form()
        except ClientException as exc:  # a malformed multipart body, refused by Litestar's parser (too large: 413)
            if exc.status_code != 400:
                raise
            raise InvalidRequest("body", exc.detail) from None
        return {key: form.get(key) for key in form}
    raise InvalidRequest("content-type", "send application/json or application/x-www-form-urlencoded")


def parse_generate_request(raw: Mapping[str, object]) -> GenerateRequest:
    """A generate request from a JSON body or form fields (its shape; ``JobService`` checks the rest)."""
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
        return msgspec.convert(data, GenerateRequest, strict=False)
    except msgspec.ValidationError as exc:
        raise _as_invalid(exc) from None


def parse_reprocess_request(raw: Mapping[str, object]) -> ReprocessRequest:
    """A reprocess request from a JSON or form body (its shape; ``JobService`` checks it against the parent)."""
    data = dict(raw)
    check_text(data)
    check_known_fields(data, _REPROCESS_FIELDS)
    if "from_stage" not in data:
        raise InvalidRequest("from_stage", "is required (search, extraction or assembly)")
    _read_form_values(data)
    _check_definition_fields(data.get("field_definitions"))
    try:
        return msgspec.convert(data, ReprocessRequest, strict=False)
    except msgspec.ValidationError as exc:
        raise _as_invalid(exc) from None


def parse_review_change(raw: Mapping[str, object]) -> ReviewChange:
    """A review decision from a JSON body (its shape; ``JobService.review`` checks it against the dataset)."""
    check_text(raw)
    check_known_fields(raw, _REVIEW_FIELDS)
    if "action" not in raw:
        raise InvalidRequest("action", "is required (approve, reject or edit a cell; exclude or restore the row)")
    try:
        return msgspec.convert(raw, ReviewChange, strict=False)
    except msgspec.ValidationError as exc:
        raise _as_invalid(exc) from None


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
