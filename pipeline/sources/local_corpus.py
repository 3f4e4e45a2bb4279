"""A local JSONL corpus indexed in SQLite FTS5 and ranked by BM25."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import tempfile
from importlib import resources
from pathlib import Path

import msgspec

from contracts import Document
from pipeline.sources.base import SourceError
from pipeline.text import head_terms, keywords

log = logging.getLogger(__name__)

SAMPLE_CORPUS = "sample_corpus.jsonl"


class CorpusRecord(msgspec.Struct, kw_only=True, frozen=True):
    """One line of a JSONL corpus."""

    id: str
    title: str
    abstract: str = ""
    authors: list[str] = []
    year: int | None = None
    doi: str | None = None
    url: str | None = None
    venue: str | None = None


_decode_record = msgspec.json.Decoder(CorpusRecord).decode


def sample_corpus_path() -> Path:
    """The synthetic sample corpus shipped inside the package."""
    return Path(str(resources.files("pipeline.sources") / "data" / SAMPLE_CORPUS))


class LocalCorpus:
    """Searches a JSONL corpus; the index is built once and rebuilt only when the file changes."""

    name = "local"

    def __init__(self, path: Path, index_dir: Path) -> None:
        self.path = path
        self.index_dir = index_dir
        self._index: Path | None = None

    def search(self, query: str, limit: int) -> list[Document]:
        """Documents matching the query's words, best first.

        BM25 over title (weighted 4×) and abstract, with the query's leading noun phrase (the kind of
        thing asked for) counted twice, so context words such as "production" do not outrank it.
        """
        terms = keywords(query)
        if not terms:
            return []
        head = [t for t in head_terms(query) if t in terms] or terms
        scores: dict[int, float] = {}
        with sqlite3.connect(self.index_path()) as db:
            for group, weight in ((terms, 1.0), (head, 2.0)):
                match = " OR ".join('"' + t.replace('"', "") + '"' for t in group)
                for rowid, score in db.execute(
                    "SELECT rowid, bm25(docs, 0.0, 4.0, 1.0) FROM docs WHERE docs MATCH ? ORDER BY 2 LIMIT ?",
                    (match, max(limit * 5, 100)),
                ):
                    scores[rowid] = scores.get(rowid, 0.0) - weight * score
            best = sorted(scores.items(), key=lambda item: -item[1])[:limit]
            raw = dict(
                db.execute(
                    f"SELECT rowid, json FROM records WHERE rowid IN ({','.join('?' * len(best))})",
                    [rowid for rowid, _ in best],
                ).fetchall()
            )
        documents = []
        for rank, (rowid, score) in enumerate(best, start=1):
            record = _decode_record(raw[rowid])
            documents.append(
                Document(
                    id=record.id,
                    title=record.title,
                    abstract=record.abstract,
                    authors=record.authors,
                    year=record.year,
                    doi=record.doi,
                    url=record.url,
                    venue=record.venue,
                    source=self.name,
                    rank=rank,
                    score=score,
                )
            )
        return documents

    def index_path(self) -> Path:
        """Path of an up-to-date index for the corpus file, building it when needed."""
        try:
            stat = self.path.stat()
        except OSError as exc:
            raise SourceError(f"corpus {self.path} is not readable: {exc}") from exc
        fingerprint = f"{self.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        name = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
        index = self.index_dir / f"corpus-{name}.sqlite"
        if self._index == index or index.exists():
            self._index = index
            return index
        self.index_dir.mkdir(parents=True, exist_ok=True)
        # Build beside the final name, then rename: concurrent workers never read a half-built index.
        fd, tmp = tempfile.mkstemp(dir=self.index_dir, suffix=".tmp")
        os.close(fd)
        try:
            count = _build_index(self.path, Path(tmp))
            os.replace(tmp, index)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        log.info("indexed %d records from %s into %s", count, self.path, index)
        self._index = index
        return index


def _build_index(corpus: Path, target: Path) -> int:
    with sqlite3.connect(target) as db:
        db.execute("CREATE TABLE records (rowid INTEGER PRIMARY KEY, id TEXT UNIQUE, json TEXT)")
        db.execute("CREATE VIRTUAL TABLE docs USING fts5(id UNINDEXED, title, abstract, tokenize='porter unicode61')")
        count = 0
        with corpus.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip() or line.startswith(b"#"):
                    continue
                try:
                    record = _decode_record(line)
                except msgspec.DecodeError as exc:
                    raise SourceError(f"{corpus}:{number}: not a corpus record ({exc})") from None
                cursor = db.execute(
                    "INSERT OR REPLACE INTO records (id, json) VALUES (?, ?)",
                    (record.id, msgspec.json.encode(record).decode()),
                )
                db.execute(
                    "INSERT INTO docs (rowid, id, title, abstract) VALUES (?, ?, ?, ?)",
                    (cursor.lastrowid, record.id, record.title, record.abstract),
                )
                count += 1
    return count
