"""Semantic Scholar Graph API paper search: https://api.semanticscholar.org/api-docs/graph (key optional)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec

from contracts import Document, Provenance
from pipeline.sources.base import Page
from pipeline.sources.http import Limits, SourceHttp
from pipeline.sources.markup import normalise_doi


class _Author(msgspec.Struct):
    name: str | None = None


class _Pdf(msgspec.Struct):
    url: str | None = None


class _Paper(msgspec.Struct, rename="camel"):
    paper_id: str
    title: str | None = None
    abstract: str | None = None
    authors: list[_Author] = []
    year: int | None = None
    external_ids: dict[str, str | int] | None = None
    url: str | None = None
    venue: str | None = None
    open_access_pdf: _Pdf | None = None


class _Search(msgspec.Struct):
    total: int = 0
    offset: int = 0
    next: int | None = None
    data: list[_Paper] = []


_decode = msgspec.json.Decoder(_Search).decode

_FIELDS = "title,abstract,authors,year,externalIds,url,venue,openAccessPdf"


class SemanticScholar:
    """Relevance search over Semantic Scholar's corpus; without a key requests share a public pool (429s)."""

    name = "semanticscholar"
    limits = Limits(per_second=1, concurrent=1)  # the rate granted to a new API key
    max_page = 100

    def __init__(self, base_url: str, *, api_key: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key

    async def pages(self, query: str, size: int, http: SourceHttp) -> AsyncIterator[Page]:
        offset: int | None = 0
        text = " ".join(query.replace('"', " ").split())  # the search takes plain text, no phrase syntax
        while offset is not None:
            params: dict[str, str | int] = {
                "query": text,
                "offset": offset,
                "limit": min(size, self.max_page),
                "fields": _FIELDS,
            }
            answer = await http.get(
                self.name,
                self.limits,
                f"{self.base_url}/paper/search",
                params=params,
                headers={"x-api-key": self.api_key} if self.api_key else None,
                parse=_decode,
            )
            documents = [self._document(p, offset + i, query) for i, p in enumerate(answer.data, start=1)]
            offset = answer.next if documents else None
            yield Page(documents=documents, more=offset is not None)

    def _document(self, paper: _Paper, rank: int, query: str) -> Document:
        ids = paper.external_ids or {}
        doi = ids.get("DOI")
        return Document(
            id=paper.paper_id,
            title=" ".join((paper.title or "").split()),
            abstract=" ".join((paper.abstract or "").split()),
            authors=[a.name for a in paper.authors if a.name],
            year=paper.year,
            doi=normalise_doi(doi) if isinstance(doi, str) else None,
            url=paper.url,
            venue=paper.venue or None,
            pdf_url=paper.open_access_pdf.url if paper.open_access_pdf else None,
            open_access=paper.open_access_pdf is not None and bool(paper.open_access_pdf.url),
            source=self.name,
            rank=rank,
            provenance=[Provenance(source=self.name, id=paper.paper_id, rank=rank, query=query)],
        )
