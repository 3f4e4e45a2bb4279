"""Crossref ``/works`` search: https://api.crossref.org (no key; abstracts are JATS and often missing)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec

from contracts import Document, Provenance
from pipeline.sources.base import Page
from pipeline.sources.http import Limits, SourceHttp
from pipeline.sources.markup import normalise_doi, plain


class _Author(msgspec.Struct):
    given: str | None = None
    family: str | None = None
    name: str | None = None


class _Date(msgspec.Struct, rename="kebab"):
    date_parts: list[list[int | None]] = []


class _Item(msgspec.Struct, rename={"doi": "DOI", "url": "URL", "container_title": "container-title"}):
    doi: str
    title: list[str] = []
    abstract: str | None = None
    author: list[_Author] = []
    issued: _Date | None = None
    container_title: list[str] = []
    url: str | None = None
    score: float | None = None


class _Message(msgspec.Struct, rename="kebab"):
    items: list[_Item] = []
    next_cursor: str | None = None
    total_results: int = 0


class _Works(msgspec.Struct):
    status: str
    message: _Message


_decode = msgspec.json.Decoder(_Works).decode

# Crossref's limits for list queries since 1 December 2025: public pool 1 request/s and 1 at a time;
# the polite pool (a mailto address) 3/s and 3 at a time.
_PUBLIC = Limits(per_second=1, concurrent=1)
_POLITE = Limits(per_second=3, concurrent=3)


class Crossref:
    """Registered works matching a bibliographic query, by relevance score."""

    name = "crossref"
    max_page = 100

    def __init__(self, base_url: str, *, email: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.email = email
        self.limits = _POLITE if email else _PUBLIC

    async def pages(self, query: str, size: int, http: SourceHttp) -> AsyncIterator[Page]:
        cursor: str | None = "*"
        rank = 0
        while cursor:
            params: dict[str, str | int] = {
                "query": query,
                "rows": min(size, self.max_page),
                "cursor": cursor,
                "select": "DOI,title,abstract,author,issued,container-title,URL,score",
            }
            if self.email:
                params["mailto"] = self.email
            answer = await http.get(self.name, self.limits, f"{self.base_url}/works", params=params, parse=_decode)
            documents = [self._document(x, rank + i, query) for i, x in enumerate(answer.message.items, start=1)]
            rank += len(documents)
            following = answer.message.next_cursor
            full = len(documents) >= min(size, self.max_page)
            cursor = following if full and following else None
            yield Page(documents=documents, more=cursor is not None)

    def _document(self, item: _Item, rank: int, query: str) -> Document:
        doi = normalise_doi(item.doi) or item.doi
        parts = item.issued.date_parts[0] if item.issued and item.issued.date_parts else []
        authors = [a.name or " ".join(p for p in (a.given, a.family) if p) for a in item.author]
        return Document(
            id=doi,
            title=plain(item.title[0] if item.title else ""),
            abstract=plain(item.abstract).removeprefix("Abstract ").strip(),
            authors=[a for a in authors if a],
            year=parts[0] if parts else None,
            doi=doi,
            url=item.url or f"https://doi.org/{doi}",
            venue=item.container_title[0] if item.container_title else None,
            source=self.name,
            rank=rank,
            score=item.score or 0.0,
            provenance=[Provenance(source=self.name, id=doi, rank=rank, query=query)],
        )
