"""Semantic Scholar Graph API paper search: https://api.semanticscholar.org/api-docs/graph (key optional)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import msgspec

from contracts import Document, Provenance
from pipeline.sources.arxiv import arxiv_id
from pipeline.sources.base import Page
from pipeline.sources.http import Limits, SourceHttp
from pipeline.sources.markup import normalise_doi


class _Author(msgspec.Struct):
    name: str | None = None


class _Pdf(msgspec.Struct):
    url: str | None = None
    #: GOLD, GREEN, HYBRID, BRONZE or CLOSED (sometimes CLOSED with an arXiv copy's URL)
    status: str | None = None
    license: str | None = None


class _Journal(msgspec.Struct):
    name: str | None = None


class _Paper(msgspec.Struct, rename="camel"):
    paper_id: str
    title: str | None = None
    abstract: str | None = None
    authors: list[_Author] = []
    year: int | None = None
    external_ids: dict[str, str | int] | None = None
    url: str | None = None
    venue: str | None = None
    journal: _Journal | None = None
    open_access_pdf: _Pdf | None = None
    is_open_access: bool | None = None
    citation_count: int | None = None
    publication_types: list[str] | None = None


class _Search(msgspec.Struct):
    total: int = 0
    offset: int = 0
    next: int | None = None
    data: list[_Paper] = []


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """One page of papers: how many it holds, its documents and the offset of the next page."""

    papers: int
    documents: list[Document]
    next: int | None = None


_decode = msgspec.json.Decoder(_Search).decode

#: every field ``_Paper`` reads (``paperId`` always comes)
_FIELDS = (
    "title,abstract,authors,year,externalIds,url,venue,journal,openAccessPdf,isOpenAccess,"
    "citationCount,publicationTypes"
)
#: the type Semantic Scholar gives nearly every paper, besides a more telling one ("Review", "Conference")
_GENERIC_TYPE = "JournalArticle"


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
                parse=partial(parse_answer, start=offset, query=query),
            )
            offset = answer.next if answer.papers else None
            yield Page(documents=answer.documents, more=offset is not None)


def parse_answer(body: bytes, *, start: int = 0, query: str = "") -> Answer:
    """The documents of one search answer, ranked from ``start + 1``; papers without a title are left out
    (an answer to a request for other ``fields`` only, such as ``fields=venue``, has none)."""
    answer = _decode(body)
    documents = [_document(paper, start + i, query) for i, paper in enumerate(answer.data, start=1)]
    return Answer(papers=len(answer.data), documents=[d for d in documents if d.title], next=answer.next)


def _document(paper: _Paper, rank: int, query: str) -> Document:
    ids = paper.external_ids or {}
    doi, preprint = ids.get("DOI"), ids.get("ArXiv")
    pdf = paper.open_access_pdf or _Pdf()
    types = paper.publication_types or []
    return Document(
        id=paper.paper_id,
        title=" ".join((paper.title or "").split()),
        abstract=" ".join((paper.abstract or "").split()),
        authors=[a.name for a in paper.authors if a.name],
        year=paper.year,
        doi=normalise_doi(doi) if isinstance(doi, str) else None,
        arxiv_id=arxiv_id(preprint) if isinstance(preprint, str) else None,
        url=paper.url,
        venue=paper.venue or (paper.journal.name if paper.journal else None) or None,
        pdf_urls=[pdf.url] if pdf.url else [],
        open_access=paper.is_open_access if paper.is_open_access is not None else bool(pdf.url),
        oa_status=pdf.status.lower() if pdf.status else None,
        license=pdf.license or None,
        cited_by=paper.citation_count,
        # the list comes in no fixed order (["Review", "JournalArticle"] and ["JournalArticle", "Review"])
        publication_type=next((t for t in types if t != _GENERIC_TYPE), types[0] if types else None),
        source=SemanticScholar.name,
        rank=rank,
        provenance=[Provenance(source=SemanticScholar.name, id=paper.paper_id, rank=rank, query=query)],
    )
