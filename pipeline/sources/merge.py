"""Merging the documents several sources return, and fusing the ranks they gave them."""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec
from rapidfuzz import fuzz, process

from contracts import Document

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


def fusion(documents: Sequence[Document]) -> list[float]:
    """Each document's reciprocal-rank fusion over every source that returned it, scaled so the best is 1."""
    fused = [sum(1 / (_RRF_K + p.rank) for p in d.provenance) or 1 / (_RRF_K + d.rank) for d in documents]
    top = max(fused, default=0.0) or 1.0
    return [f / top for f in fused]
