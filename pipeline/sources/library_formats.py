"""The records of one library file — BibTeX, CSV, JSONL, Markdown/text or PDF — and the warnings about it.

``read_file``, ``read_bibtex`` and ``read_attachment`` are what a reader process runs (``parsing.ReaderProcess``):
each opens only a regular file, takes plain arguments and returns picklable values. ``pipeline.sources.local``
decides what to read and keeps the results in its index.
"""

from __future__ import annotations

import csv
import io
import os
import re
import stat
from pathlib import Path

import msgspec
from bibtexparser.entrypoint import parse_string
from bibtexparser.library import Library
from bibtexparser.middlewares import LatexDecodingMiddleware, SeparateCoAuthors, default_parse_stack
from bibtexparser.model import Block, DuplicateBlockKeyBlock, DuplicateFieldKeyBlock, Entry, ParsingFailedBlock

from contracts import Section
from pipeline.sources.base import FullText
from pipeline.sources.parsing import ReadFailed, describe
from pipeline.sources.pdf import PdfText, read_pdf

ABSTRACT_CHARS = 2000

_SECTION = re.compile(r"(\d+(\.\d+)*\.?\s+)?(introduction|keywords?|key words|index terms)\b", re.IGNORECASE)
_JOINED = {"file": ";", "keywords": ", "}  # BibTeX fields whose repeated values are all kept, so joined


class LibraryRecord(msgspec.Struct, kw_only=True, frozen=True):
    """One paper in the library, whichever file it came from; a JSONL corpus line has this shape."""

    id: str
    title: str
    abstract: str = ""
    full_text: str | None = None
    pages: list[int] = []
    sections: list[Section] = []
    full_text_from: str | None = None
    authors: list[str] = []
    year: int | None = None
    doi: str | None = None
    arxiv_id: str | None = None
    url: str | None = None
    venue: str | None = None


class LibraryBudget(msgspec.Struct, kw_only=True, frozen=True):
    """What reading one library file may cost; a file over budget is skipped with a warning until it changes."""

    max_file_bytes: int = 50 * 1024 * 1024
    #: PDF pages, counted before any page is read
    max_pages: int = 500
    #: seconds one file (a PDF a BibTeX entry attaches is a file of its own) may take to read
    parse_timeout_s: float = 60.0
    #: characters of full text kept per document, cut at a page boundary
    max_text_chars: int = 1_000_000


decode_record = msgspec.json.Decoder(LibraryRecord).decode


def read_file(path: Path, rel: str, budget: LibraryBudget) -> tuple[list[LibraryRecord], list[str]]:
    """The records of a CSV, JSONL, Markdown/text or PDF file, and warnings about it (``rel``: its name in them)."""
    data = _read_regular(path)
    suffix = path.suffix.lower()
    warnings: list[str] = []
    if suffix == ".csv":
        records = _csv(data, rel)
    elif suffix in (".md", ".txt"):
        records = [_text_record(rel, _text(data))]
    elif suffix == ".pdf":
        pdf = read_pdf(data, name=path.name, max_pages=budget.max_pages)
        if not pdf.text.strip():
            warnings.append(f"{rel}: no text could be extracted (a scanned PDF?)")
        records = [_pdf_record(rel, pdf)]
    else:
        records = _jsonl(data, rel, warnings)
    return [capped(record, budget.max_text_chars) for record in records], warnings


def read_bibtex(path: Path, rel: str) -> tuple[list[tuple[LibraryRecord, str]], list[str]]:
    """Each titled entry of a BibTeX file as a record (without full text) with its ``file`` field, and warnings."""
    warnings: list[str] = []
    # Split only, so that the entries bibtexparser sets aside go through the same middlewares as the rest.
    split = parse_string(_text(_read_regular(path)), parse_stack=[])
    library = Library(_recovered(split.blocks, rel, warnings), fail_on_duplicate_key=False)
    for middleware in default_parse_stack():
        library = middleware.transform(library)
    files = {e.key: str(file) for e in library.entries if (file := _bibtex_fields(e).get("file"))}
    # Braced groups survive decoding so that "{Smith and Sons}" stays one author; braces go afterwards.
    library = SeparateCoAuthors().transform(LatexDecodingMiddleware(keep_braced_groups=True).transform(library))
    entries = []
    for entry in library.entries:
        fields = _bibtex_fields(entry)
        title = _clean(fields.get("title"))
        if not title:
            continue
        names = fields.get("author", [])
        record = LibraryRecord(
            id=entry.key,
            title=title,
            abstract=_clean(fields.get("abstract")),
            authors=[a for name in (names if isinstance(names, list) else [names]) if (a := _clean(name))],
            year=_year(_clean(fields.get("year") or fields.get("date"))),
            doi=_clean(fields.get("doi")) or None,
            url=_clean(fields.get("url")) or None,
            venue=_clean(fields.get("journal") or fields.get("journaltitle") or fields.get("booktitle")) or None,
        )
        entries.append((record, files.get(entry.key, "")))
    return entries, warnings


def read_attachment(path: Path, budget: LibraryBudget) -> PdfText:
    """The text of a PDF that a BibTeX entry attaches."""
    return read_pdf(_read_regular(path), name=path.name, max_pages=budget.max_pages)


def with_full_text(record: LibraryRecord, pdfs: list[tuple[str, PdfText]], max_chars: int) -> LibraryRecord:
    """A BibTeX entry's record with the full texts of its PDFs (its path in the library, and what it says)."""
    text = _joined(pdfs)
    joined = msgspec.structs.replace(
        record,
        full_text=text.text or None,
        pages=text.pages,
        sections=text.sections,
        full_text_from=text.origin or None,
        arxiv_id=next((pdf.arxiv_id for _, pdf in pdfs if pdf.arxiv_id), None),
    )
    return capped(joined, max_chars)


def capped(record: LibraryRecord, max_chars: int) -> LibraryRecord:
    """The record with its full text cut to ``max_chars``, at the last page boundary before it (when it has pages).

    The full text goes into every job's documents in Redis: a 1,000-page PDF must not put megabytes there.
    """
    text = record.full_text
    if text is None or len(text) <= max_chars:
        return record
    cut = max((p for p in record.pages if 0 < p <= max_chars), default=max_chars)
    return msgspec.structs.replace(
        record,
        full_text=text[:cut],
        pages=[p for p in record.pages if p < cut],
        sections=[s for s in record.sections if s.start < cut],
    )


def pdf_paths(value: str) -> list[str]:
    """PDF paths in a Zotero/Mendeley ``file`` field: ``description:path:mime`` items separated by ``;``."""
    paths = []
    for item in re.split(r"(?<!\\);", value):
        parts = [re.sub(r"\\(.)", r"\1", p) for p in re.split(r"(?<!\\):", item.strip())]
        path = ":".join(parts[1:-1]) if len(parts) >= 3 else parts[0]
        if path.lower().endswith(".pdf") or parts[-1].lower() in ("pdf", "application/pdf"):
            paths.append(path)
    return paths


def _read_regular(path: Path) -> bytes:
    """The bytes of ``path``, which must be a regular file when opened (not only when the library was walked).

    ``O_NONBLOCK``: opening a named pipe put in the file's place since would otherwise wait for a writer.
    """
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ReadFailed("not a regular file")
        return handle.read()


def _text(data: bytes) -> str:
    """UTF-8 bytes as text with ``\n`` line ends, as ``Path.read_text`` reads them."""
    return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def _jsonl(data: bytes, rel: str, warnings: list[str]) -> list[LibraryRecord]:
    records = []
    for number, line in enumerate(data.splitlines(), start=1):
        if line.strip() and not line.startswith(b"#"):
            try:
                records.append(decode_record(line))
            except msgspec.DecodeError as exc:
                warnings.append(f"{rel}:{number}: not a library record ({exc}); skipped")
    return records


def _recovered(blocks: list[Block], rel: str, warnings: list[str]) -> list[Block]:
    """The split blocks, with the entries that bibtexparser set aside (a repeated key or field) put back.

    An entry that repeats a field keeps all its fields (``_bibtex_fields`` picks the values); one whose
    citation key an earlier entry has becomes ``<key>-2``, ``<key>-3``, … (a key no other entry has).
    Each of the two problems is reported once for the file; other failed blocks are skipped, each with a warning.
    """
    entries = [_held_entry(block) for block in blocks]
    taken = {entry.key for entry in entries if entry is not None}
    seen: set[str] = set()
    shared: list[str] = []  # the keys of the renamed entries …
    renamed: list[str] = []  # … and their new ones
    repeated: set[str] = set()  # the repeated fields …
    repeating = 0  # … and how many entries repeat one
    recovered: list[Block] = []
    for block, entry in zip(blocks, entries, strict=True):
        if entry is None:
            if isinstance(block, ParsingFailedBlock):
                reason = getattr(block.error, "abort_reason", "") or describe(block.error)
                line = (block.start_line or 0) + 1
                warnings.append(f"{rel}:{line}: not valid BibTeX ({reason}); skipped")
            else:
                recovered.append(block)
            continue
        if isinstance(block, DuplicateFieldKeyBlock):
            repeating += 1
            repeated |= {key.lower() for key in block.duplicate_keys}
        if entry.key in seen:
            number = 2
            while f"{entry.key}-{number}" in taken:
                number += 1
            shared.append(entry.key)
            entry.key = f"{entry.key}-{number}"
            renamed.append(entry.key)
            taken.add(entry.key)
        seen.add(entry.key)
        recovered.append(entry)
    if renamed:
        warnings.append(
            f"{rel}: {_count(len(renamed), 'entry shares', 'entries share')} a citation key with an earlier"
            f" entry (first: {_first(shared)}); read as {_first(renamed)}"
        )
    if repeating:
        joined = sorted(repeated & _JOINED.keys())
        warnings.append(
            f"{rel}: {_count(repeating, 'entry repeats', 'entries repeat')} a field"
            f" ({', '.join(sorted(repeated))}); the first value is kept"
            + (f", all values of {' and '.join(joined)} are joined" if joined else "")
        )
    return recovered


def _held_entry(block: Block) -> Entry | None:
    """The entry a block is, or the one it holds because bibtexparser found its key or a field repeated."""
    held = block.ignore_error_block if isinstance(block, DuplicateBlockKeyBlock | DuplicateFieldKeyBlock) else block
    return held if isinstance(held, Entry) else None


def _bibtex_fields(entry: Entry) -> dict[str, object]:
    """The entry's fields by lower-case name; of a repeated one the first value (of ``file``, ``keywords`` all)."""
    fields: dict[str, object] = {}
    for field in entry.fields:
        key, value = field.key.lower(), field.value
        first = fields.get(key)
        if first is None:
            fields[key] = value
        elif key in _JOINED and isinstance(first, str) and isinstance(value, str):
            fields[key] = _JOINED[key].join(v for v in (first, value) if v.strip())
    return fields


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def _first(items: list[str], shown: int = 3) -> str:
    """The first few distinct items, then "…" if there are more."""
    distinct = list(dict.fromkeys(items))
    return ", ".join(distinct[:shown]) + (", …" if len(distinct) > shown else "")


def _csv(data: bytes, rel: str) -> list[LibraryRecord]:
    rows = [
        {(k or "").strip().lower(): v.strip() for k, v in row.items() if isinstance(v, str)}
        for row in csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""), strict=True)
    ]
    if rows and "title" not in rows[0]:
        raise ValueError("no title column")
    return [
        LibraryRecord(
            id=row.get("id") or f"{rel}#{number}",
            title=row["title"],
            abstract=row.get("abstract", ""),
            authors=[a.strip() for a in row.get("authors", "").split(";") if a.strip()],
            year=_year(row.get("year", "")),
            doi=row.get("doi") or None,
            url=row.get("url") or None,
            venue=row.get("venue") or None,
        )
        for number, row in enumerate(rows, start=1)
        if row.get("title")
    ]


def _joined(pdfs: list[tuple[str, PdfText]]) -> FullText:
    """The full texts of an entry's PDFs as one, pages and sections moved to their place in it."""
    text, pages, sections, origins = "", [], [], []
    for origin, pdf in pdfs:
        if text:
            text += "\n\n"
        offset = len(text)
        text += pdf.text
        pages += [offset + p for p in pdf.pages]
        sections += [msgspec.structs.replace(s, start=offset + s.start) for s in pdf.sections]
        origins.append(origin)
    return FullText(text=text, pages=pages, sections=sections, origin="; ".join(origins))


def _text_record(rel: str, text: str) -> LibraryRecord:
    """A text file's record: title from the first Markdown heading (else the first line), then a paragraph."""
    lines = [line.strip() for line in text.splitlines()]
    first = next((i for i, line in enumerate(lines) if re.match(r"#{1,6}\s", line)), None)
    if first is None:
        first = next((i for i, line in enumerate(lines) if line), len(lines))
    title = lines[first].lstrip("#").strip() if first < len(lines) else ""
    return LibraryRecord(id=rel, title=title or Path(rel).stem, abstract=_paragraph(lines[first + 1 :]), full_text=text)


def _pdf_record(rel: str, pdf: PdfText) -> LibraryRecord:
    """A PDF's record: what the reader found on its pages (title, authors, year, ids, abstract) and its text."""
    return LibraryRecord(
        id=rel,
        title=pdf.title[:500] or Path(rel).stem,
        abstract=pdf.abstract,
        full_text=pdf.text,
        pages=pdf.pages,
        sections=pdf.sections,
        full_text_from=rel,
        authors=pdf.authors,
        year=pdf.year,
        doi=pdf.doi,
        arxiv_id=pdf.arxiv_id,
    )


def _paragraph(lines: list[str]) -> str:
    """The first paragraph of ``lines``: skips blank lines and headings, stops at the next one or a section."""
    paragraph: list[str] = []
    for line in lines:
        if not line or line.startswith("#") or _SECTION.match(line):
            if paragraph:
                break
            continue
        paragraph.append(line)
    return " ".join(paragraph)[:ABSTRACT_CHARS]


def _clean(value: object) -> str:
    return " ".join(value.replace("{", "").replace("}", "").split()) if isinstance(value, str) else ""


def _year(value: str) -> int | None:
    found = re.search(r"\b\d{4}\b", value)
    return int(found.group()) if found else None
