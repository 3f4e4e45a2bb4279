"""A local library — BibTeX, CSV, JSONL, Markdown/text and PDF files — indexed in SQLite FTS5, ranked by BM25."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from contracts import Document, Provenance
from pipeline.errors import SourceError
from pipeline.sources.base import Page
from pipeline.sources.library_formats import (
    LibraryBudget,
    LibraryRecord,
    decode_record,
    pdf_paths,
    read_attachment,
    read_bibtex,
    read_file,
    with_full_text,
)
from pipeline.sources.markup import normalise_doi
from pipeline.sources.parsing import ReaderProcess, ReaderUnavailable, ReadFailed, describe
from pipeline.sources.pdf import PdfText
from pipeline.text import head_terms, keywords

if TYPE_CHECKING:
    from pipeline.sources.http import SourceHttp

log = logging.getLogger(__name__)

SAMPLE_CORPUS = "sample_corpus.jsonl"
SUFFIXES = frozenset({".bib", ".csv", ".jsonl", ".md", ".pdf", ".txt"})
MISSING = (-1, -1)
#: warnings kept per file; a file with more has the rest counted in one last warning
MAX_WARNINGS = 20
#: lock files a library's readers claim files with (by a hash of the file's path): enough that two workers
#: rarely want the same one, few enough that the folder stays small
_LOCKS = 64
#: text files (Markdown, CSV, JSONL) up to this size are read in this process: their parsers take time in
#: proportion to their size, milliseconds for these, where starting a reader process takes half a second
_READ_IN_PLACE_BYTES = 1024 * 1024
#: what reader processes import once (``ReaderProcess``): the parsers, and pdfium
_PRELOAD = ("pipeline.sources.library_formats", "pypdfium2")
_KINDS = {stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device"}

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, warning TEXT)",
    "CREATE TABLE IF NOT EXISTS attachments (file TEXT, path TEXT, size INTEGER, mtime_ns INTEGER)",
    "CREATE INDEX IF NOT EXISTS attachments_file ON attachments (file)",
    "CREATE INDEX IF NOT EXISTS attachments_path ON attachments (path)",
    "CREATE TABLE IF NOT EXISTS records (rowid INTEGER PRIMARY KEY, file TEXT, json BLOB)",
    "CREATE INDEX IF NOT EXISTS records_file ON records (file)",
    "CREATE VIRTUAL TABLE IF NOT EXISTS docs USING fts5(title, abstract, full_text, tokenize='porter unicode61')",
)

_encode = msgspec.json.encode


def sample_corpus_path() -> Path:
    """The synthetic sample corpus shipped inside the package."""
    return Path(str(resources.files("pipeline.sources") / "data" / SAMPLE_CORPUS))


class LocalLibrary:
    """Searches a folder of paper files (or one JSONL corpus); the index follows the files incrementally.

    The index keeps each file's size and mtime, so a refresh re-reads only new and changed files. A PDF
    that a BibTeX entry attaches is read as that entry's full text, not as a paper of its own. Files are
    read in a child process within ``budget``. Files that cannot be read, that are over budget, that are
    not regular files or that lie outside ``root`` (via ``..`` or a symlink) are never indexed; their
    warning is kept with the file in the index, reported once by the refresh that read it, and the file is
    not read again until it changes.
    """

    name = "local"

    def __init__(self, root: Path, index_dir: Path, budget: LibraryBudget | None = None) -> None:
        self.root = root
        self.index_dir = index_dir
        self.budget = budget or LibraryBudget()
        self.reindexed: list[str] = []  # files the last refresh() read, relative to the root

    def search(self, query: str, limit: int) -> list[Document]:
        """Documents matching the query's words, best first (the index is refreshed first)."""
        self.refresh()
        return self._ranked(query, limit)

    async def pages(self, query: str, size: int, http: SourceHttp) -> AsyncIterator[Page]:
        """One page: the best ``size`` documents and the warnings about the files this search read."""
        warnings, documents = await asyncio.to_thread(lambda: (self.refresh(), self._ranked(query, size)))
        yield Page(documents=documents, more=False, warnings=warnings)

    def refresh(self) -> list[str]:
        """Brings the index up to date with the files under the root; returns the warnings about the files it read.

        Each new or changed file is read by one refresh, whichever worker or thread runs it; a refresh that
        finds a file claimed by another waits for it. So a file's warnings are reported once, by the refresh
        that read it, and kept in the index (``warnings()``) until the file changes.
        """
        root = self._resolved_root()
        base = root.parent if root.is_file() else root
        with self._connect(root) as db, _reader(self.budget) as reader:
            locks = self._index_path(root).with_suffix(".locks")
            files = _Files(db, reader, root=root, base=base, budget=self.budget, locks=locks)
            walked = dict(_walk(root))
            stored = {path: (size, mtime) for path, size, mtime in db.execute("SELECT path, size, mtime_ns FROM files")}
            for rel in sorted(stored.keys() - walked.keys()):
                with _transaction(db):
                    _forget(db, rel)
            # BibTeX files first: a PDF that an entry attaches is read with that entry, not on its own.
            bibs = sorted(rel for rel in walked if rel.lower().endswith(".bib"))
            read = files.reindex(
                [rel for rel in bibs if stored.get(rel) != walked[rel] or _attachment_changed(db, base, rel)]
            )
            attached = {path for (path,) in db.execute("SELECT path FROM attachments")}
            changed = []
            for rel in sorted(walked.keys() - set(bibs)):
                if rel in attached:
                    if rel in stored:
                        with _transaction(db):
                            _forget(db, rel)
                elif stored.get(rel) != walked[rel]:
                    changed.append(rel)
            read |= files.reindex(changed)
        self.reindexed = list(read)
        return sorted(warning for warnings in read.values() for warning in warnings)

    def warnings(self) -> list[str]:
        """Every warning the index keeps about the library's files (without refreshing it)."""
        with self._connect(self._resolved_root()) as db:
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
            record = msgspec.structs.replace(decode_record(raw), full_text=text or None)
            fields = msgspec.structs.asdict(record) | {"doi": normalise_doi(record.doi) or record.doi}
            provenance = [Provenance(source=self.name, id=record.id, rank=rank, query=query)]
            documents.append(Document(**fields, source=self.name, rank=rank, score=score, provenance=provenance))
        return documents

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
            _write_ahead_log(db)
            with _transaction(db):
                for statement in _SCHEMA:
                    db.execute(statement)
            yield db
        finally:
            db.close()


def _write_ahead_log(db: sqlite3.Connection) -> None:
    """Put a new index in WAL mode (it stays so). The switch needs the file to itself, and SQLite answers "database
    is locked" at once, not after its busy timeout, when another worker opens the new index at the same moment."""
    deadline = time.monotonic() + 60
    while db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


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
        info = os.stat(path)
    except OSError:
        return MISSING
    return info.st_size, info.st_mtime_ns


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


class _Files:
    """Reads new and changed files of one library into its index, each file once across workers and threads."""

    def __init__(
        self,
        db: sqlite3.Connection,
        reader: ReaderProcess,
        *,
        root: Path,
        base: Path,
        budget: LibraryBudget,
        locks: Path,
    ) -> None:
        self.db, self.reader, self.root, self.base, self.budget, self.locks = db, reader, root, base, budget, locks

    def reindex(self, rels: list[str]) -> dict[str, list[str]]:
        """Reads each of ``rels`` that is still stale; the warnings about each file read here, by file.

        A file that another refresh is reading (it holds the file's lock) is left for last and waited for;
        once it is free the file is read here only if still stale (the other refresh died meanwhile).
        """
        read: dict[str, list[str]] = {}
        busy: list[str] = []
        for rel in rels:
            with _claim(self.locks, rel, wait=False) as claimed:
                if not claimed:
                    busy.append(rel)
                elif (warnings := self._reindex(rel)) is not None:
                    read[rel] = warnings
        for rel in busy:
            with _claim(self.locks, rel, wait=True):
                if (warnings := self._reindex(rel)) is not None:
                    read[rel] = warnings
        return read

    def _reindex(self, rel: str) -> list[str] | None:
        """Reads ``rel`` into the index, if it is stale (the caller holds its claim); its warnings, else None."""
        if not _stale(self.db, self.base, rel):
            return None  # another refresh read it since this one walked the library
        version = _stat(self.base / rel)  # before reading: a change while it is read is read next time
        started = time.perf_counter()
        reading = _Reading(self.root, self.base, rel, self.budget, self.reader)
        records = reading.records()
        warnings = _summarised(rel, [" ".join(warning.split()) for warning in reading.warnings])
        with _transaction(self.db):
            _forget(self.db, rel)
            self.db.execute("INSERT INTO files VALUES (?, ?, ?, ?)", (rel, *version, "\n".join(warnings) or None))
            self.db.executemany(
                "INSERT INTO attachments VALUES (?, ?, ?, ?)", [(rel, p, *s) for p, s in reading.attachments.items()]
            )
            for record in records:
                stored = _encode(msgspec.structs.replace(record, full_text=None))
                rowid = self.db.execute("INSERT INTO records (file, json) VALUES (?, ?)", (rel, stored)).lastrowid
                self.db.execute(
                    "INSERT INTO docs (rowid, title, abstract, full_text) VALUES (?, ?, ?, ?)",
                    (rowid, record.title, record.abstract, record.full_text or ""),
                )
        seconds = time.perf_counter() - started
        level = logging.INFO if seconds >= 1 else logging.DEBUG  # the slow reads, not each of 1,000 notes
        log.log(level, "library %s: read %s in %.2f s: %d records", self.root, rel, seconds, len(records))
        for warning in warnings:
            log.warning("library %s: %s", self.root, warning)
        return warnings


@contextmanager
def _claim(locks: Path, rel: str, *, wait: bool) -> Iterator[bool]:
    """Holds the claim on reading ``rel`` while the block runs; yields False if another holds it and not ``wait``.

    The claim is an exclusive ``flock`` on one of ``_LOCKS`` lock files, picked by a hash of the path. Each claim
    opens its lock file anew, so it excludes other threads as well as other processes; the kernel drops it
    when its holder dies, so a killed worker leaves no claim behind. Two files of one lock file are read one
    after the other.
    """
    locks.mkdir(parents=True, exist_ok=True)
    number = int.from_bytes(hashlib.sha256(rel.encode()).digest()[:4], "big") % _LOCKS
    fd = os.open(locks / f"{number:02d}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


class _Reading:
    """Reads one file of the library: its records, warnings about it, and the PDFs its entries attach.

    Every file is checked here (inside the root, a regular file, within the size budget). PDF and BibTeX
    files, and text files over ``_READ_IN_PLACE_BYTES``, are parsed by ``reader``, a child process (a
    temporary one when none is given), within the time budget.
    """

    def __init__(
        self, root: Path, base: Path, rel: str, budget: LibraryBudget | None = None, reader: ReaderProcess | None = None
    ) -> None:
        self.root, self.base, self.rel, self.path = root, base, rel, base / rel
        self.budget = budget or LibraryBudget()
        self.reader = reader
        self.warnings: list[str] = []
        self.attachments: dict[str, tuple[int, int]] = {}

    def records(self) -> list[LibraryRecord]:
        """The file's records; none, with a warning, when it cannot be read or is over budget."""
        if self.reader is not None:
            return self._records(self.reader)
        with _reader(self.budget) as reader:
            return self._records(reader)

    def _records(self, reader: ReaderProcess) -> list[LibraryRecord]:
        try:
            if not _inside(self.path.resolve(), self.root):
                self.warnings.append(f"{self.rel} links to a file outside the library; ignored")
                return []
            size = _check(self.path, self.budget)
            suffix = self.path.suffix.lower()
            if suffix == ".bib":
                return self._bibtex(reader)
            if suffix == ".pdf" or size > _READ_IN_PLACE_BYTES:
                records, warnings = reader.run(read_file, self.path, self.rel, self.budget)
            else:
                records, warnings = read_file(self.path, self.rel, self.budget)
            self.warnings += warnings
            return records
        except ReaderUnavailable as exc:  # not the file's fault: not recorded against it, the search fails
            raise SourceError(f"local library {self.root}: {exc}") from exc
        except Exception as exc:  # whatever a parser raises on a broken file, the rest of the library is searched
            self.warnings.append(f"{self.rel}: {describe(exc)}; skipped")
            return []

    def _bibtex(self, reader: ReaderProcess) -> list[LibraryRecord]:
        entries, warnings = reader.run(read_bibtex, self.path, self.rel)
        self.warnings += warnings
        records = []
        for record, files in entries:
            pdfs = [pdf for raw in pdf_paths(files) if (pdf := self._attached(reader, record.id, raw))]
            records.append(with_full_text(record, pdfs, self.budget.max_text_chars) if pdfs else record)
        return records

    def _attached(self, reader: ReaderProcess, key: str, raw: str) -> tuple[str, PdfText] | None:
        """A PDF that entry ``key`` attaches (its path in the library, and what it says), if it lies inside the
        library and can be read within the budget."""
        about = f"{self.rel}: entry {key} attaches {raw}"
        try:
            path = (self.path.parent / raw).resolve()
            if not _inside(path, self.root):
                self.warnings.append(f"{about}, which is outside the library; ignored")
                return None
            rel = path.relative_to(self.base).as_posix()
            self.attachments[rel] = _stat(path)
            _check(path, self.budget)
            return rel, reader.run(read_attachment, path, self.budget)
        except ReaderUnavailable:
            raise
        except Exception as exc:  # as in records(): a broken attachment costs only its own text
            self.warnings.append(f"{about}: {describe(exc)}; ignored")
            return None


def _reader(budget: LibraryBudget) -> ReaderProcess:
    return ReaderProcess(budget.parse_timeout_s, preload=_PRELOAD)


def _check(path: Path, budget: LibraryBudget) -> int:
    """The size of ``path``; raises ``ReadFailed`` unless it is a regular file (or a symlink to one) within the size
    budget.

    ``stat`` never blocks, where opening a named pipe waits for a writer: such a file is never opened.
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ReadFailed(f"not a regular file ({_KINDS.get(stat.S_IFMT(info.st_mode), 'a special file')})")
    if info.st_size > budget.max_file_bytes:
        size, limit = (f"{n / 1024 / 1024:.1f}".removesuffix(".0") for n in (info.st_size, budget.max_file_bytes))
        raise ReadFailed(f"{size} MiB, over the budget of {limit} MiB for a library file")
    return info.st_size


def _summarised(rel: str, warnings: list[str]) -> list[str]:
    """At most ``MAX_WARNINGS`` warnings: the first ones, then one that counts the rest."""
    if len(warnings) <= MAX_WARNINGS:
        return warnings
    return [*warnings[: MAX_WARNINGS - 1], f"{rel}: {len(warnings) - MAX_WARNINGS + 1} more warnings like these"]


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
