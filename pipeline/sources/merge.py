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
_ARXIV_DOI = "10.48550/arxiv."


def title_key(title: str) -> str:
    """A title reduced to lower-case letters and digits, for comparing titles across sources."""
    return " ".join(re.findall(r"[a-z0-9]+", title.lower()))


def has_text(document: Document) -> bool:
    """Whether the extractor has anything to read beyond the title."""
    return bool(document.abstract.strip() or (document.full_text or "").strip())


def is_arxiv_doi(doi: str | None) -> bool:
    """Whether ``doi`` is the DOI DataCite registers for an arXiv preprint (``10.48550/arxiv.…``)."""
    return bool(doi) and (doi or "").startswith(_ARXIV_DOI)


class DocumentPool:
    """Documents from every source, duplicates merged as they arrive: the same DOI or arXiv id, else a
    near-identical title (a preprint and its published version when their first authors agree too)."""

    def __init__(self) -> None:
        self.documents: list[Document] = []
        self.duplicates = 0
        self._by_id: dict[str, int] = {}
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
        for key in _ids(self.documents[index]):
            self._by_id[key] = index

    @property
    def usable(self) -> int:
        """Documents with an abstract or full text."""
        return sum(map(has_text, self.documents))

    def _find(self, document: Document) -> int | None:
        for key in _ids(document):
            if key in self._by_id:
                return self._by_id[key]
        key = title_key(document.title)
        if not key:
            return None
        cutoff = 100 if len(key) < _SHORT_TITLE else TITLE_MATCH
        match = process.extractOne(key, self._titles, scorer=fuzz.ratio, score_cutoff=cutoff)
        if match is None:
            return None
        index = match[2]
        other = self.documents[index]
        if not (document.doi and other.doi and other.doi != document.doi):
            return index
        # two DOIs: the same paper only as a preprint and its published version, by the same first author
        preprint = is_arxiv_doi(document.doi) != is_arxiv_doi(other.doi)
        return index if preprint and _first_author(document) == _first_author(other) else None


def combine(first: Document, second: Document) -> Document:
    """One record of a paper two sources returned: the first's fields, gaps filled from the second; of a
    preprint and its published version, the published DOI and both ids."""
    text = first if first.full_text else second
    dois = [d for d in (first.doi, second.doi) if d]
    return msgspec.structs.replace(
        first,
        abstract=max(first.abstract, second.abstract, key=len),
        full_text=text.full_text,
        pages=text.pages,
        sections=text.sections,
        full_text_from=text.full_text_from,
        authors=first.authors or second.authors,
        year=first.year or second.year,
        doi=next((d for d in dois if not is_arxiv_doi(d)), dois[0] if dois else None),
        url=first.url or second.url,
        arxiv_id=first.arxiv_id or second.arxiv_id,
        venue=first.venue or second.venue,
        pdf_urls=list(dict.fromkeys([*first.pdf_urls, *second.pdf_urls])),
        open_access=first.open_access or second.open_access,
        oa_status=first.oa_status or second.oa_status,
        license=first.license or second.license,
        cited_by=max(first.cited_by or 0, second.cited_by or 0) if first.cited_by or second.cited_by else None,
        publication_type=first.publication_type or second.publication_type,
        retracted=first.retracted or second.retracted,
        provenance=[*first.provenance, *second.provenance],
    )


def _ids(document: Document) -> list[str]:
    """The identifiers that make two records one paper: its DOI and its arXiv id (an arXiv DOI's included)."""
    ids = [document.doi] if document.doi else []
    if document.arxiv_id:
        ids.append(f"arxiv:{document.arxiv_id.lower()}")
    if is_arxiv_doi(document.doi):
        ids.append(f"arxiv:{(document.doi or '').removeprefix(_ARXIV_DOI)}")
    return ids


def _first_author(document: Document) -> str:
    """The first author's family name, lower-case ASCII letters (as "Lo" in "Kyle Lo" or "Lo, Kyle")."""
    if not document.authors:
        return ""
    name = document.authors[0]
    family = name.split(",")[0] if "," in name else name.split()[-1] if name.split() else ""
    return "".join(re.findall(r"[a-z]+", family.lower()))


def fusion(documents: Sequence[Document]) -> list[float]:
    """Each document's reciprocal-rank fusion over every source that returned it, scaled so the best is 1."""
    fused = [sum(1 / (_RRF_K + p.rank) for p in d.provenance) or 1 / (_RRF_K + d.rank) for d in documents]
    top = max(fused, default=0.0) or 1.0
    return [f / top for f in fused]
