"""OpenAlex ``/works`` search: https://docs.openalex.org (an API key is required since February 2026)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import msgspec

from contracts import Document, Provenance
from pipeline.sources.arxiv import arxiv_id
from pipeline.sources.base import Page
from pipeline.sources.http import Limits, SourceHttp
from pipeline.sources.markup import normalise_doi, plain


class _Author(msgspec.Struct):
    display_name: str | None = None


class _Authorship(msgspec.Struct):
    author: _Author = msgspec.field(default_factory=_Author)


class _Venue(msgspec.Struct):
    display_name: str | None = None


class _Location(msgspec.Struct):
    is_oa: bool | None = None
    landing_page_url: str | None = None
    pdf_url: str | None = None
    source: _Venue | None = None
    license: str | None = None


class _OpenAccess(msgspec.Struct):
    is_oa: bool | None = None
    oa_status: str | None = None


class _Work(msgspec.Struct):
    id: str
    doi: str | None = None
    title: str | None = None
    display_name: str | None = None
    publication_year: int | None = None
    authorships: list[_Authorship] = []
    abstract_inverted_index: dict[str, list[int]] | None = None
    primary_location: _Location | None = None
    best_oa_location: _Location | None = None
    locations: list[_Location] = []
    open_access: _OpenAccess | None = None
    relevance_score: float | None = None
    cited_by_count: int | None = None
    type: str | None = None
    is_retracted: bool = False


class _Meta(msgspec.Struct):
    count: int | None = None
    next_cursor: str | None = None


class _Works(msgspec.Struct):
    meta: _Meta
    results: list[_Work]


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """One page of works: how many it holds, its documents and the cursor to the next page."""

    works: int
    documents: list[Document]
    next_cursor: str | None = None


_decode = msgspec.json.Decoder(_Works).decode

#: every field ``_Work`` reads, and no more (``select`` keeps the answers small)
_FIELDS = (
    "id,doi,title,display_name,publication_year,authorships,abstract_inverted_index,"
    "primary_location,best_oa_location,locations,open_access,relevance_score,cited_by_count,type,is_retracted"
)


def abstract_from_index(index: dict[str, list[int]] | None) -> str:
    """The abstract OpenAlex ships as an inverted index (word → positions), as running text."""
    if not index:
        return ""
    placed = sorted((position, word) for word, positions in index.items() for position in positions)
    return " ".join(word for _, word in placed)


class OpenAlex:
    """Works matching a full-text search, relevance-ordered, 200 per page at most."""

    name = "openalex"
    limits = Limits(per_second=10, concurrent=5)  # the API allows 100/s; search costs credits
    max_page = 200

    def __init__(self, base_url: str, *, api_key: str | None, email: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.email = email

    async def pages(self, query: str, size: int, http: SourceHttp) -> AsyncIterator[Page]:
        cursor: str | None = "*"
        rank = 0
        while cursor:
            params: dict[str, str | int] = {
                "search": query,
                "per-page": min(size, self.max_page),
                "cursor": cursor,
                "select": _FIELDS,
            }
            if self.email:
                params["mailto"] = self.email
            answer = await http.get(
                self.name,
                self.limits,
                f"{self.base_url}/works",
                params=params,
                secrets={"api_key": self.api_key} if self.api_key else None,
                parse=partial(parse_answer, start=rank, query=query),
            )
            rank += answer.works
            cursor = answer.next_cursor if answer.works else None
            yield Page(documents=answer.documents, more=cursor is not None)


def parse_answer(body: bytes, *, start: int = 0, query: str = "") -> Answer:
    """The documents of one ``/works`` answer, ranked from ``start + 1``; works without a title are left out."""
    answer = _decode(body)
    documents = [_document(work, start + i, query) for i, work in enumerate(answer.results, start=1)]
    return Answer(
        works=len(answer.results),
        documents=[d for d in documents if d.title],
        next_cursor=answer.meta.next_cursor,
    )


def _document(work: _Work, rank: int, query: str) -> Document:
    work_id = work.id.rsplit("/", 1)[-1]
    primary, best = work.primary_location, work.best_oa_location
    venue = primary.source.display_name if primary and primary.source else None
    places = [place for place in (primary, best, *work.locations) if place]
    addresses = [work.doi, *(url for place in places for url in (place.landing_page_url, place.pdf_url))]
    open_copies = [best] if best else []  # the best open copy first, then every other open one
    open_copies += [place for place in work.locations if place.is_oa]
    return Document(
        id=work_id,
        title=" ".join(plain(work.title or work.display_name).split()),
        abstract=abstract_from_index(work.abstract_inverted_index),
        authors=[a.author.display_name for a in work.authorships if a.author.display_name],
        year=work.publication_year,
        doi=normalise_doi(work.doi),
        arxiv_id=next(filter(None, map(arxiv_id, addresses)), None),
        url=(primary.landing_page_url if primary else None) or work.doi or work.id,
        venue=venue,
        pdf_urls=list(dict.fromkeys(place.pdf_url for place in open_copies if place.pdf_url)),
        open_access=work.open_access.is_oa if work.open_access else None,
        oa_status=work.open_access.oa_status if work.open_access else None,
        license=(best.license if best else None) or (primary.license if primary else None),
        cited_by=work.cited_by_count,
        publication_type=work.type,
        retracted=work.is_retracted,
        source=OpenAlex.name,
        rank=rank,
        score=work.relevance_score or 0.0,
        provenance=[Provenance(source=OpenAlex.name, id=work_id, rank=rank, query=query)],
    )
