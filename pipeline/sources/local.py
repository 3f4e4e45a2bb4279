"""A local library — BibTeX, CSV, JSONL, Markdown/text and PDF files — indexed in SQLite FTS5, ranked by BM25."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from bibtexparser.entrypoint import parse_string
from bibtexparser.library import Library
from bibtexparser.middlewares import LatexDecodingMiddleware, SeparateCoAuthors, default_parse_stack
from bibtexparser.model import Block, DuplicateBlockKeyBlock, DuplicateFieldKeyBlock, Entry, ParsingFailedBlock

from contracts import Document, Provenance, Section
from pipeline.errors import SourceError
from pipeline.sources.base import FullText, Page
from pipeline.sources.markup import normalise_doi
from pipeline.sources.pdf import PdfText, read_pdf
from pipeline.text import head_terms, keywords

if TYPE_CHECKING:
    from pipeline.sources.http import SourceHttp

SAMPLE_CORPUS = "sample_corpus.jsonl"
SUFFIXES = frozenset({".bib", ".csv", ".jsonl", ".md", ".pdf", ".txt"})
ABSTRACT_CHARS = 2000
MISSING = (-1, -1)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, warning TEXT)",
    "CREATE TABLE IF NOT EXISTS attachments (file TEXT, path TEXT, size INTEGER, mtime_ns INTEGER)",
    "CREATE INDEX IF NOT EXISTS attachments_file ON attachments (file)",
    "CREATE INDEX IF NOT EXISTS attachments_path ON attachments (path)",
    "CREATE TABLE IF NOT EXISTS records (rowid INTEGER PRIMARY KEY, file TEXT, json BLOB)",
    "CREATE INDEX IF NOT EXISTS records_file ON records (file)",
    "CREATE VIRTUAL TABLE IF NOT EXISTS docs USING fts5(title, abstract, full_text, tokenize='porter unicode61')",
)
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


_decode_record = msgspec.json.Decoder(LibraryRecord).decode
_encode = msgspec.json.encode


def sample_corpus_path() -> Path:
    """The synthetic sample corpus shipped inside the package."""
    return Path(str(resources.files("pipeline.sources") / "data" / SAMPLE_CORPUS))


class LocalLibrary:
    """Searches a folder of paper files (or one JSONL corpus); the index follows the files incrementally.

    The index keeps each file's size and mtime, so a refresh re-reads only new and changed files. A PDF
    that a BibTeX entry attaches is read as that entry's full text, not as a paper of its own. Files
    that cannot be read, or that lie outside ``root`` (via ``..`` or a symlink), are never indexed; their
    warning is kept and reported by every search until the file changes.
    """

    name = "local"

    def __init__(self, root: Path, index_dir: Path) -> None:
        self.root = root
        self.index_dir = index_dir
        self.reindexed: list[str] = []  # files the last refresh() read, relative to the root

    def search(self, query: str, limit: int) -> list[Document]:
        """Documents matching the query's words, best first (the index is refreshed first)."""
        self.refresh()
        return self._ranked(query, limit)

    async def pages(self, query: str, size: int, http: SourceHttp) -> AsyncIterator[Page]:
        """One page: the best ``size`` documents and the warnings about unreadable files."""
        warnings, documents = await asyncio.to_thread(lambda: (self.refresh(), self._ranked(query, size)))
        yield Page(documents=documents, more=False, warnings=warnings)

    def refresh(self) -> list[str]:
        """Brings the index up to date with the files under the root; returns every current warning."""
        root = self._resolved_root()
        base = root.parent if root.is_file() else root
        self.reindexed = []
        with self._connect(root) as db:
            walked = dict(_walk(root))
            stored = {path: (size, mtime) for path, size, mtime in db.execute("SELECT path, size, mtime_ns FROM files")}
            for rel in sorted(stored.keys() - walked.keys()):
                with _transaction(db):
                    _forget(db, rel)
            # BibTeX files first: a PDF that an entry attaches is read with that entry, not on its own.
            bibs = sorted(rel for rel in walked if rel.lower().endswith(".bib"))
            for rel in bibs:
                if stored.get(rel) != walked[rel] or _attachment_changed(db, base, rel):
                    self._reindex(db, root, base, rel)
            attached = {path for (path,) in db.execute("SELECT path FROM attachments")}
            for rel in sorted(walked.keys() - set(bibs)):
                if rel in attached:
                    if rel in stored:
                        with _transaction(db):
                            _forget(db, rel)
                elif stored.get(rel) != walked[rel]:
                    self._reindex(db, root, base, rel)
            notes = db.execute("SELECT warning FROM files WHERE warning IS NOT NULL").fetchall()
        return sorted(warning for (text,) in notes for warning in text.split("\n"))

    def index_path(self) -> Path:
        """The index file of this root (one per resolved root, shared by every worker)."""
        return self._index_path(self._resolved_root())

    def _ranked(self, query: str, limit: int) -> list[Document]:
        """BM25 over title (4×), abstract and full text (½×), the query's leading noun phrase counted twice."""
        terms = keywords(query)
        if not terms:
            return []
        head = [t for t in head_terms(query) if t in terms] or terms
        scores: dict[int, float] = {}
        with self._connect(self._resolved_root()) as db, _transaction(db, "BEGIN"):
            for group, weight in ((terms, 1.0), (head, 2.0)):
                match = " OR ".join('"' + t.replace('"', "") + '"' for t in group)
                for rowid, score in db.execute(
                    "SELECT rowid, bm25(docs, 4.0, 1.0, 0.5) FROM docs WHERE docs MATCH ? ORDER BY 2 LIMIT ?",
                    (match, max(limit * 5, 100)),
                ):
                    scores[rowid] = scores.get(rowid, 0.0) - weight * score
            best = sorted(scores.items(), key=lambda item: -item[1])[:limit]
            rows = {
                rowid: (raw, text)
                for rowid, raw, text in db.execute(
                    "SELECT records.rowid, json, full_text FROM records JOIN docs ON docs.rowid = records.rowid"
                    f" WHERE records.rowid IN ({','.join('?' * len(best))})",
                    [rowid for rowid, _ in best],
                )
            }
        documents = []
        for rank, (rowid, score) in enumerate(best, start=1):
            raw, text = rows[rowid]
            record = msgspec.structs.replace(_decode_record(raw), full_text=text or None)
            fields = msgspec.structs.asdict(record) | {"doi": normalise_doi(record.doi) or record.doi}
            provenance = [Provenance(source=self.name, id=record.id, rank=rank, query=query)]
            documents.append(Document(**fields, source=self.name, rank=rank, score=score, provenance=provenance))
        return documents

    def _reindex(self, db: sqlite3.Connection, root: Path, base: Path, rel: str) -> None:
        stat = _stat(base / rel)
        reading = _Reading(root, base, rel)
        records = reading.records()  # slow for PDFs, so outside the write lock, and re-checked inside it
        with _transaction(db):
            if not _stale(db, base, rel):
                return  # another worker indexed the same version meanwhile
            _forget(db, rel)
            warning = "\n".join(" ".join(w.split()) for w in reading.warnings) or None
            db.execute("INSERT INTO files VALUES (?, ?, ?, ?)", (rel, *stat, warning))
            db.executemany(
                "INSERT INTO attachments VALUES (?, ?, ?, ?)", [(rel, p, *s) for p, s in reading.attachments.items()]
            )
            for record in records:
                stored = _encode(msgspec.structs.replace(record, full_text=None))
                rowid = db.execute("INSERT INTO records (file, json) VALUES (?, ?)", (rel, stored)).lastrowid
                db.execute(
                    "INSERT INTO docs (rowid, title, abstract, full_text) VALUES (?, ?, ?, ?)",
                    (rowid, record.title, record.abstract, record.full_text or ""),
                )
        self.reindexed.append(rel)

    def _resolved_root(self) -> Path:
        try:
            return self.root.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise SourceError(f"local library {self.root} does not exist or is not readable: {exc}") from exc

    def _index_path(self, root: Path) -> Path:
        return self.index_dir / f"library-{hashlib.sha256(f'v2:{root}'.encode()).hexdigest()[:16]}.sqlite"

    @contextmanager
    def _connect(self, root: Path) -> Iterator[sqlite3.Connection]:
        self.index_dir.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._index_path(root), timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            with _transaction(db):
                for statement in _SCHEMA:
                    db.execute(statement)
            yield db
        finally:
            db.close()


@contextmanager
def _transaction(db: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    """A transaction; ``BEGIN IMMEDIATE`` takes the write lock at once, so writers in other workers queue."""
    db.execute(begin)
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _walk(root: Path) -> Iterator[tuple[str, tuple[int, int]]]:
    """(path relative to the root in posix form, (size, mtime_ns)) of each of the library's files.

    Hidden files and folders are skipped and symlinked folders not entered. Plain strings rather than
    ``Path`` objects: every search walks the whole library, and this keeps that to a few ms per 1,000 files.
    """
    if root.is_file():
        yield root.name, _stat(root)
        return
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        prefix = os.path.relpath(folder, root).replace(os.sep, "/") + "/"
        for name in files:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in SUFFIXES:
                yield prefix.removeprefix("./") + name, _stat(os.path.join(folder, name))


def _stat(path: Path | str) -> tuple[int, int]:
    try:
        stat = os.stat(path)
    except OSError:
        return MISSING
    return stat.st_size, stat.st_mtime_ns


def _stale(db: sqlite3.Connection, base: Path, rel: str) -> bool:
    """Whether the file, or a PDF it attaches, differs from what the index holds."""
    row = db.execute("SELECT size, mtime_ns FROM files WHERE path = ?", (rel,)).fetchone()
    return row is None or tuple(row) != _stat(base / rel) or _attachment_changed(db, base, rel)


def _attachment_changed(db: sqlite3.Connection, base: Path, rel: str) -> bool:
    """Whether a PDF that the BibTeX file ``rel`` attaches differs from what the index holds."""
    attached = db.execute("SELECT path, size, mtime_ns FROM attachments WHERE file = ?", (rel,)).fetchall()
    return any(_stat(base / path) != (size, mtime) for path, size, mtime in attached)


def _forget(db: sqlite3.Connection, rel: str) -> None:
    db.execute("DELETE FROM docs WHERE rowid IN (SELECT rowid FROM records WHERE file = ?)", (rel,))
    for table, column in (("records", "file"), ("attachments", "file"), ("files", "path")):
        db.execute(f"DELETE FROM {table} WHERE {column} = ?", (rel,))


class _Reading:
    """Reads one file of the library: its records, warnings about it, and the PDFs its entries attach."""

    def __init__(self, root: Path, base: Path, rel: str) -> None:
        self.root, self.base, self.rel, self.path = root, base, rel, base / rel
        self.warnings: list[str] = []
        self.attachments: dict[str, tuple[int, int]] = {}

    def records(self) -> list[LibraryRecord]:
        suffix = self.path.suffix.lower()
        try:
            if not _inside(self.path.resolve(), self.root):
                self.warnings.append(f"{self.rel} links to a file outside the library; ignored")
                return []
            if suffix == ".bib":
                return self._bibtex()
            if suffix == ".csv":
                return _csv(self.path, self.rel)
            if suffix in (".md", ".txt"):
                return [_text_record(self.rel, self.path.read_text(encoding="utf-8"))]
            if suffix == ".pdf":
                pdf = read_pdf(self.path, name=self.path.name)
                if not pdf.text.strip():
                    self.warnings.append(f"{self.rel}: no text could be extracted (a scanned PDF?)")
                return [_pdf_record(self.rel, pdf)]
            return self._jsonl()
        except Exception as exc:  # whatever a parser raises on a broken file, the rest of the library is searched
            self.warnings.append(f"{self.rel}: {_reason(exc)}; skipped")
            return []

    def _jsonl(self) -> list[LibraryRecord]:
        records = []
        for number, line in enumerate(self.path.read_bytes().splitlines(), start=1):
            if line.strip() and not line.startswith(b"#"):
                try:
                    records.append(_decode_record(line))
                except msgspec.DecodeError as exc:
                    self.warnings.append(f"{self.rel}:{number}: not a library record ({exc}); skipped")
        return records

    def _bibtex(self) -> list[LibraryRecord]:
        # Split only, so that the entries bibtexparser sets aside go through the same middlewares as the rest.
        split = parse_string(self.path.read_text(encoding="utf-8"), parse_stack=[])
        library = Library(self._recovered(split.blocks), fail_on_duplicate_key=False)
        for middleware in default_parse_stack():
            library = middleware.transform(library)
        files = {e.key: str(file) for e in library.entries if (file := _bibtex_fields(e).get("file"))}
        # Braced groups survive decoding so that "{Smith and Sons}" stays one author; braces go afterwards.
        library = SeparateCoAuthors().transform(LatexDecodingMiddleware(keep_braced_groups=True).transform(library))
        records = []
        for entry in library.entries:
            fields = _bibtex_fields(entry)
            title = _clean(fields.get("title"))
            if not title:
                continue
            pdfs = [pdf for raw in _pdf_paths(files.get(entry.key, "")) if (pdf := self._attached(entry.key, raw))]
            text = _joined(pdfs)
            names = fields.get("author", [])
            records.append(
                LibraryRecord(
                    id=entry.key,
                    title=title,
                    abstract=_clean(fields.get("abstract")),
                    full_text=text.text or None,
                    pages=text.pages,
                    sections=text.sections,
                    full_text_from=text.origin or None,
                    arxiv_id=next((pdf.arxiv_id for _, pdf in pdfs if pdf.arxiv_id), None),
                    authors=[a for name in (names if isinstance(names, list) else [names]) if (a := _clean(name))],
                    year=_year(_clean(fields.get("year") or fields.get("date"))),
                    doi=_clean(fields.get("doi")) or None,
                    url=_clean(fields.get("url")) or None,
                    venue=_clean(fields.get("journal") or fields.get("journaltitle") or fields.get("booktitle"))
                    or None,
                )
            )
        return records

    def _recovered(self, blocks: list[Block]) -> list[Block]:
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
                    reason = getattr(block.error, "abort_reason", "") or _reason(block.error)
                    line = (block.start_line or 0) + 1
                    self.warnings.append(f"{self.rel}:{line}: not valid BibTeX ({reason}); skipped")
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
            self.warnings.append(
                f"{self.rel}: {_count(len(renamed), 'entry shares', 'entries share')} a citation key with an earlier"
                f" entry (first: {_first(shared)}); read as {_first(renamed)}"
            )
        if repeating:
            joined = sorted(repeated & _JOINED.keys())
            self.warnings.append(
                f"{self.rel}: {_count(repeating, 'entry repeats', 'entries repeat')} a field"
                f" ({', '.join(sorted(repeated))}); the first value is kept"
                + (f", all values of {' and '.join(joined)} are joined" if joined else "")
            )
        return recovered

    def _attached(self, key: str, raw: str) -> tuple[str, PdfText] | None:
        """A PDF that entry ``key`` attaches (its path in the library, and what it says), if it lies inside the
        library and can be read."""
        about = f"{self.rel}: entry {key} attaches {raw}"
        try:
            path = (self.path.parent / raw).resolve()
            if not _inside(path, self.root):
                self.warnings.append(f"{about}, which is outside the library; ignored")
                return None
            rel = path.relative_to(self.base).as_posix()
            self.attachments[rel] = _stat(path)
            return rel, read_pdf(path, name=path.name)
        except Exception as exc:  # as in records(): a broken attachment costs only its own text
            self.warnings.append(f"{about}: {_reason(exc)}; ignored")
            return None


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


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _csv(path: Path, rel: str) -> list[LibraryRecord]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = [
            {(k or "").strip().lower(): v.strip() for k, v in row.items() if isinstance(v, str)}
            for row in csv.DictReader(handle, strict=True)
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


def _pdf_paths(value: str) -> list[str]:
    """PDF paths in a Zotero/Mendeley ``file`` field: ``description:path:mime`` items separated by ``;``."""
    paths = []
    for item in re.split(r"(?<!\\);", value):
        parts = [re.sub(r"\\(.)", r"\1", p) for p in re.split(r"(?<!\\):", item.strip())]
        path = ":".join(parts[1:-1]) if len(parts) >= 3 else parts[0]
        if path.lower().endswith(".pdf") or parts[-1].lower() in ("pdf", "application/pdf"):
            paths.append(path)
    return paths


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


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return " ".join(str(exc).split())[:300] or type(exc).__name__
