"""Merging the documents several sources return, and ranking them against the question."""

from __future__ import annotations

import re
import sqlite3

import msgspec
from rapidfuzz import fuzz, process

from contracts import Document
from pipeline.text import head_terms, keywords

#: two titles this similar (rapidfuzz ratio of their normalised forms) are the same paper
TITLE_MATCH = 95
_SHORT_TITLE = 20  # shorter normalised titles must match exactly ("Introduction", "Editorial")
_RRF_K = 10  # reciprocal-rank constant: how quickly a source's later answers lose weight


def title_key(title: str) -> str:
    """A title reduced to lower-case letters and digits, for comparing titles across sources."""
    return " ".join(re.findall(r"[a-z0-9]+", title.lower()))


def has_text(document: Document) -> bool:
    """Whether the extractor has anything to read beyond the title."""
    return bool(document.abstract.strip() or (document.full_text or "").strip())


class DocumentPool:
    """Documents from every source, duplicates (same DOI, else near-identical title) merged as they arrive."""

    def __init__(self) -> None:
        self.documents: list[Document] = []
        self.duplicates = 0
        self._by_doi: dict[str, int] = {}
        self._titles: list[str] = []

    def add(self, document: Document) -> None:
        index = self._find(document)
        if index is None:
            self.documents.append(document)
            self._titles.append(title_key(document.title))
            index = len(self.documents) - 1
        else:
            self.documents[index] = combine(self.documents[index], document)
            self.duplicates += 1
        if self.documents[index].doi:
            self._by_doi[self.documents[index].doi or ""] = index

    @property
    def usable(self) -> int:
        """Documents with an abstract or full text."""
        return sum(map(has_text, self.documents))

    def _find(self, document: Document) -> int | None:
        if document.doi and document.doi in self._by_doi:
            return self._by_doi[document.doi]
        key = title_key(document.title)
        if not key:
            return None
        cutoff = 100 if len(key) < _SHORT_TITLE else TITLE_MATCH
        match = process.extractOne(key, self._titles, scorer=fuzz.ratio, score_cutoff=cutoff)
        if match is None:
            return None
        index = match[2]
        other = self.documents[index].doi
        return None if document.doi and other and other != document.doi else index


def combine(first: Document, second: Document) -> Document:
    """One record of a paper two sources returned: the first's fields, gaps filled from the second."""
    return msgspec.structs.replace(
        first,
        abstract=max(first.abstract, second.abstract, key=len),
        full_text=first.full_text or second.full_text,
        authors=first.authors or second.authors,
        year=first.year or second.year,
        doi=first.doi or second.doi,
        url=first.url or second.url,
        venue=first.venue or second.venue,
        pdf_url=first.pdf_url or second.pdf_url,
        open_access=first.open_access or second.open_access,
        provenance=[*first.provenance, *second.provenance],
    )


def rank(documents: list[Document], question: str, limit: int) -> list[Document]:
    """The ``limit`` best documents, each scored by an even blend of two normalised signals.

    BM25 of title (weighted 2×) and abstract against the question's keywords, those of its leading
    noun phrase counted twice more (as the local corpus ranks), and the sources' own ranks
    (reciprocal-rank fusion over every source that returned the document).
    """
    if not documents:
        return []
    terms = keywords(question)
    head = [t for t in head_terms(question) if t in terms]
    relevance = [a + 2 * b for a, b in zip(_bm25(documents, terms), _bm25(documents, head), strict=True)]
    fused = [sum(1 / (_RRF_K + p.rank) for p in d.provenance) or 1 / (_RRF_K + d.rank) for d in documents]
    top_relevance, top_fused = max(relevance) or 1.0, max(fused)
    scores = [0.5 * r / top_relevance + 0.5 * f / top_fused for r, f in zip(relevance, fused, strict=True)]
    order = sorted(range(len(documents)), key=lambda i: -scores[i])[:limit]
    return [
        msgspec.structs.replace(documents[i], rank=position, score=round(scores[i], 4))
        for position, i in enumerate(order, start=1)
    ]


def _bm25(documents: list[Document], terms: list[str]) -> list[float]:
    """BM25 relevance of each document (0 when no term occurs), from an in-memory FTS5 index."""
    scores = [0.0] * len(documents)
    if not terms:
        return scores
    with sqlite3.connect(":memory:") as db:
        db.execute("CREATE VIRTUAL TABLE docs USING fts5(title, abstract, tokenize='porter unicode61')")
        db.executemany(
            "INSERT INTO docs (rowid, title, abstract) VALUES (?, ?, ?)",
            [(i, d.title, d.abstract) for i, d in enumerate(documents)],
        )
        match = " OR ".join('"' + t.replace('"', "") + '"' for t in terms)
        for rowid, score in db.execute("SELECT rowid, bm25(docs, 2.0, 1.0) FROM docs WHERE docs MATCH ?", (match,)):
            scores[rowid] = -score
    return scores
