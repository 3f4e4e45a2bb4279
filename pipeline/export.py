"""Dataset exports: JSON, JSON Lines and CSV."""

from __future__ import annotations

import csv
import io

import msgspec

from contracts import Dataset, FieldValue

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def to_json(dataset: Dataset) -> bytes:
    """The whole dataset as one JSON document."""
    return msgspec.json.format(msgspec.json.encode(dataset), indent=2)


def to_jsonl(dataset: Dataset) -> bytes:
    """One JSON object per row (``row`` and ``citations``)."""
    return b"".join(msgspec.json.encode(row) + b"\n" for row in dataset.rows)


def to_csv(dataset: Dataset) -> str:
    """One column per field in schema order, then ``sources`` and ``evidence``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    names = [f.name for f in dataset.schema]
    writer.writerow([*names, "sources", "evidence"])
    for row in dataset.rows:
        sources = dict.fromkeys(c.metadata.doi or c.source_id for c in row.citations)
        evidence = dict.fromkeys(f"{c.field}: {c.text_span}" for c in row.citations)
        cells = [_cell(row.row.get(name)) for name in names]
        writer.writerow([*cells, _safe("; ".join(sources)), _safe(" | ".join(evidence))])
    return buffer.getvalue()


def _cell(value: FieldValue) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return _safe(msgspec.json.encode(value).decode())
    if isinstance(value, bool):
        return "true" if value else "false"
    return _safe(str(value))


def _safe(text: str) -> str:
    """Spreadsheets run cells starting with = + - @ as formulas; a leading quote keeps them text."""
    return "'" + text if text.startswith(_FORMULA_START) else text
