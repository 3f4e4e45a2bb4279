"""Dataset exports: JSON, JSON Lines and CSV of the dataset, a table of its citations, and its papers.

JSON and JSON Lines of the dataset hold every row, reviewed or not; every other export leaves out the rows a
reviewer excluded.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from typing import Literal

import msgspec

from contracts import GENERATED_SOURCE, CellStatus, Dataset, FieldValue
from pipeline.references import backing, cited_papers, short_labels
from pipeline.review import included

ExportFormat = Literal["json", "csv", "jsonl"]
PaperFormat = Literal["json", "csv"]
CitationFormat = Literal["csv", "jsonl"]

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
    """One line per row no reviewer excluded: a column per field in schema order, then the extra columns.

    The extras are ``confidence`` (high, medium, low), ``sources`` (the cited papers' short labels, "Smith et
    al. 2021", "(retracted)" after a retracted paper's), ``evidence`` (the quotes, each with its page when known:
    "(p. 3)"), ``support`` (how many distinct papers back the row), ``review`` (the reviewed cells:
    "cost: edited; name: approved") and ``row_id``; new columns come last so readers of the older ones keep their
    positions. A generated identifier cites no paper and a rejected cell's quotes back nothing, so neither adds to
    ``sources``, ``evidence`` or ``support``. When the schema has a field named like an extra column, that column
    is headed with a leading ``_`` instead (field names never start with an underscore), so every header stays
    unique.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    names = [f.name for f in dataset.schema]
    extras = ("confidence", "sources", "evidence", "support", "review", "row_id")
    writer.writerow([*names, *(f"_{extra}" if extra in names else extra for extra in extras)])
    position = {name: i for i, name in enumerate(names)}
    rows = included(dataset)
    labels = short_labels(cited_papers(rows))
    for row in rows:
        cited = backing(row)
        sources = dict.fromkeys(labels[c.source_id] for c in cited)
        evidence = dict.fromkeys(
            f"{c.field}: {c.text_span}" + (f" (p. {c.page_number})" if c.page_number else "") for c in cited
        )
        cells = row.review.cells if row.review else {}
        reviewed = sorted(cells, key=lambda name: position.get(name, len(names)))
        review = "; ".join(f"{name}: {cells[name].status}" for name in reviewed)
        writer.writerow(
            [
                *(_cell(row.row.get(name)) for name in names),
                row.confidence,
                _safe("; ".join(sources)),
                _safe(" | ".join(evidence)),
                len({c.source_id for c in cited}),
                _safe(review),
                _safe(row.row_id),
            ]
        )
    return buffer.getvalue()


class CitationLine(msgspec.Struct, frozen=True, kw_only=True):
    """One citation of a cited value: the row and field, the value (as reviewed), the quote and the paper.

    ``review`` is the cell's review status (null when nobody reviewed it); a rejected cell's value is null, its
    quote still listed so the rejection can be checked. ``page`` and ``section`` are known for full texts.
    """

    row_id: str
    field: str
    value: FieldValue
    review: CellStatus | None
    quote: str
    page: int | None
    section: str | None
    source_id: str
    title: str
    authors: list[str]
    year: int | None
    venue: str | None
    doi: str | None
    url: str | None
    retracted: bool


CITATION_COLUMNS: tuple[str, ...] = CitationLine.__struct_fields__


def citation_lines(dataset: Dataset) -> list[CitationLine]:
    """Every citation of a value in the rows no reviewer excluded, row by row (generated identifiers cite none)."""
    lines = []
    for row in included(dataset):
        cells = row.review.cells if row.review else {}
        for c in row.citations:
            if c.source_id == GENERATED_SOURCE:
                continue
            meta = c.metadata
            lines.append(
                CitationLine(
                    row_id=row.row_id,
                    field=c.field,
                    value=row.row.get(c.field),
                    review=cells[c.field].status if c.field in cells else None,
                    quote=c.text_span,
                    page=c.page_number,
                    section=c.section,
                    source_id=c.source_id,
                    title=meta.title,
                    authors=meta.authors,
                    year=meta.year,
                    venue=meta.venue,
                    doi=meta.doi,
                    url=meta.url,
                    retracted=meta.retracted,
                )
            )
    return lines


def export_citations(dataset: Dataset, format: CitationFormat) -> bytes:
    """The citations table: one CSV line or one JSON object per citation of a value."""
    lines = citation_lines(dataset)
    if format == "jsonl":
        return b"".join(msgspec.json.encode(line) + b"\n" for line in lines)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CITATION_COLUMNS)
    for line in lines:
        values = msgspec.structs.asdict(line)
        values["authors"] = "; ".join(line.authors)
        values["review"] = line.review or ""
        writer.writerow([_cell(values[name]) for name in CITATION_COLUMNS])
    return buffer.getvalue().encode()


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
    """The papers the job considered, with the screening's decision and reason: a JSON list or a CSV table.

    ``rows`` counts the rows citing each paper among those no reviewer excluded.
    """
    cited = Counter(source for row in included(dataset) for source in {c.source_id for c in backing(row)})
    papers = [msgspec.structs.replace(p, rows=cited[p.id]) for p in dataset.papers]
    if format == "json":
        return msgspec.json.format(msgspec.json.encode(papers), indent=2)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(_PAPER_COLUMNS)
    for paper in papers:
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
