"""Dataset exports: JSON, JSON Lines and CSV."""

from __future__ import annotations

import csv
import io
from typing import Literal

import msgspec

from contracts import GENERATED_SOURCE, Dataset, FieldValue

ExportFormat = Literal["json", "csv", "jsonl"]
PaperFormat = Literal["json", "csv"]

#: media type of each export format
MEDIA_TYPES: dict[ExportFormat, str] = {
    "json": "application/json",
    "csv": "text/csv",  # Litestar adds "; charset=utf-8" to text types
    "jsonl": "application/x-ndjson",
}

#: a cell starting with one of these is run as a formula by spreadsheets; the quote is the escape itself
_ESCAPE_START = ("=", "+", "-", "@", "\t", "\r", "'")


def export(dataset: Dataset, format: ExportFormat) -> bytes:
    """The dataset in one of the export formats."""
    if format == "csv":
        return to_csv(dataset).encode()
    return to_jsonl(dataset) if format == "jsonl" else to_json(dataset)


def to_json(dataset: Dataset) -> bytes:
    """The whole dataset as one JSON document."""
    return msgspec.json.format(msgspec.json.encode(dataset), indent=2)


def to_jsonl(dataset: Dataset) -> bytes:
    """One JSON object per row (``row`` and ``citations``)."""
    return b"".join(msgspec.json.encode(row) + b"\n" for row in dataset.rows)


def to_csv(dataset: Dataset) -> str:
    """One column per field in schema order, then ``confidence`` (high, medium, low), ``sources`` (DOIs, else
    source ids; "(retracted)" after a retracted paper's) and ``evidence`` (the quotes, each with its page when
    known: "(p. 3)").

    Generated identifiers cite no source, so they add nothing to either column. When the schema has a field
    named ``confidence``, ``sources`` or ``evidence`` itself, that extra column is headed with a leading ``_`` instead
    (field names never start with an underscore), so every header stays unique.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    names = [f.name for f in dataset.schema]
    extras = ("confidence", "sources", "evidence")
    writer.writerow([*names, *(f"_{extra}" if extra in names else extra for extra in extras)])
    for row in dataset.rows:
        cited = [c for c in row.citations if c.source_id != GENERATED_SOURCE]
        sources = dict.fromkeys(
            (c.metadata.doi or c.source_id) + (" (retracted)" if c.metadata.retracted else "") for c in cited
        )
        evidence = dict.fromkeys(
            f"{c.field}: {c.text_span}" + (f" (p. {c.page_number})" if c.page_number else "") for c in cited
        )
        cells = [_cell(row.row.get(name)) for name in names]
        writer.writerow([*cells, row.confidence, _safe("; ".join(sources)), _safe(" | ".join(evidence))])
    return buffer.getvalue()


_PAPER_COLUMNS = (
    "id",
    "title",
    "year",
    "doi",
    "url",
    "source",
    "score",
    "decision",
    "exclusion",
    "reason",
    "quote",
    "rows",
    "retracted",
    "full_text",
)


def export_papers(dataset: Dataset, format: PaperFormat) -> bytes:
    """The papers the job considered, with the screening's decision and reason: a JSON list or a CSV table."""
    if format == "json":
        return msgspec.json.format(msgspec.json.encode(dataset.papers), indent=2)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(_PAPER_COLUMNS)
    for paper in dataset.papers:
        values = msgspec.structs.asdict(paper)
        writer.writerow([_cell(values[name]) for name in _PAPER_COLUMNS])
    return buffer.getvalue().encode()


def _cell(value: FieldValue) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return _safe(msgspec.json.encode(value).decode())
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # a number, never a formula (a leading "-" is its sign)
    return _safe(str(value))


def _safe(text: str) -> str:
    """Spreadsheets run cells starting with = + - @ (or tab, CR) as formulas; a leading quote keeps them text.

    Spreadsheets hide that quote. Text that starts with a quote gets one more, so stripping one leading
    quote always gives the original back.
    """
    return "'" + text if text.startswith(_ESCAPE_START) else text
