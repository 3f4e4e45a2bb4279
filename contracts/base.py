"""Base Structs shared by every contract."""

from __future__ import annotations

import msgspec

#: A JSON-native value a dataset cell may hold (dates travel as ISO strings).
FieldValue = str | int | float | bool | None | list[object] | dict[str, object]

#: A flat JSON-native value carried in an event's ``data``.
EventValue = str | int | float | bool | None


class Record(msgspec.Struct, kw_only=True, frozen=True):
    """Base for stored and queued records: tolerant of unknown fields so old and new workers can talk."""


class Inbound(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Base for bodies sent to the API: unknown fields are an error, not silently dropped."""
