"""Crossref ``/works`` search: https://api.crossref.org (no key; abstracts are JATS and often missing)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

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


class _License(msgspec.Struct, rename={"url": "URL", "content_version": "content-version"}):
    url: str | None = None
    content_version: str | None = None


class _Link(msgspec.Struct, rename={"url": "URL", "content_type": "content-type", "use": "intended-application"}):
    url: str | None = None
    content_type: str | None = None
    use: str | None = None


class _Update(msgspec.Struct):
    type: str | None = None


class _Item(
    msgspec.Struct,
    rename={
        "doi": "DOI",
        "url": "URL",
        "container_title": "container-title",
        "cited_by": "is-referenced-by-count",
        "updated_by": "updated-by",
    },
):
    doi: str
    title: list[str] = []
    abstract: str | None = None
    author: list[_Author] = []
    issued: _Date | None = None
    container_title: list[str] = []
    url: str | None = None
    score: float | None = None
    cited_by: int | None = None
    license: list[_License] = []
    type: str | None = None
    link: list[_Link] = []
    #: the notices that updated this work (a retraction, a correction…), from its publisher or Retraction Watch
    updated_by: list[_Update] = []


class _Message(msgspec.Struct, rename="kebab"):
    items: list[_Item] = []
    next_cursor: str | None = None
    total_results: int = 0


class _Works(msgspec.Struct, rename="kebab"):
    status: str
    message: _Message
    message_type: str = "work-list"


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """One page of works: how many it holds, its documents and the cursor to the next page."""

    items: int
    documents: list[Document]
    next_cursor: str | None = None


_decode = msgspec.json.Decoder(_Works).decode

#: every field ``_Item`` reads, and no more (``select`` keeps the answers small)
_SELECT = (
    "DOI,title,abstract,author,issued,container-title,URL,score,is-referenced-by-count,license,type,link,updated-by"
)

#: the headings a JATS abstract opens with, left out of the abstract's text
_HEADINGS = frozenset({"abstract", "summary"})
#: the full-text links worth downloading: the publisher's copies for text mining, as PDF or XML (JATS)
_TEXT_TYPES = frozenset({"application/pdf", "application/xml", "text/xml", "unspecified"})

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
                "select": _SELECT,
            }
            if self.email:
                params["mailto"] = self.email
            answer = await http.get(
                self.name,
                self.limits,
                f"{self.base_url}/works",
                params=params,
                parse=partial(parse_answer, start=rank, query=query),
            )
            rank += answer.items
            full = answer.items >= min(size, self.max_page)
            cursor = answer.next_cursor if full and answer.next_cursor else None
            yield Page(documents=answer.documents, more=cursor is not None)


def parse_answer(body: bytes, *, start: int = 0, query: str = "") -> Answer:
    """The documents of one ``/works`` list, ranked from ``start + 1``; works without a title are left out.

    Raises ``ValueError`` for another kind of answer (``/works/{doi}`` answers one ``work``, not a list).
    """
    answer = _decode(body)
    if answer.message_type != "work-list":
        raise ValueError(f"expected a work-list, got a {answer.message_type}")
    items = answer.message.items
    documents = [_document(item, start + i, query) for i, item in enumerate(items, start=1)]
    return Answer(
        items=len(items),
        documents=[d for d in documents if d.title],
        next_cursor=answer.message.next_cursor,
    )


def _document(item: _Item, rank: int, query: str) -> Document:
    doi = normalise_doi(item.doi) or item.doi
    parts = item.issued.date_parts[0] if item.issued and item.issued.date_parts else []
    authors = [a.name or " ".join(p for p in (a.given, a.family) if p) for a in item.author]
    licence = next((x for x in item.license if x.content_version == "vor"), item.license[0] if item.license else None)
    texts = [x.url for x in item.link if x.use == "text-mining" and x.content_type in _TEXT_TYPES and x.url]
    return Document(
        id=doi,
        title=" ".join(plain(item.title[0] if item.title else None).split()),
        abstract=_abstract(item.abstract),
        authors=[a for a in authors if a],
        year=parts[0] if parts else None,
        doi=doi,
        url=item.url or f"https://doi.org/{doi}",
        venue=" ".join(plain(item.container_title[0] if item.container_title else None).split()) or None,
        pdf_urls=list(dict.fromkeys(texts)),
        license=licence.url if licence else None,
        cited_by=item.cited_by,
        publication_type=item.type,
        # the work itself was retracted; a retraction notice names the work it retracts in ``update-to`` instead
        retracted=any(update.type == "retraction" for update in item.updated_by),
        source=Crossref.name,
        rank=rank,
        score=item.score or 0.0,
        provenance=[Provenance(source=Crossref.name, id=doi, rank=rank, query=query)],
    )


def _abstract(jats: str | None) -> str:
    """The text of a JATS abstract (``<jats:title>Abstract</jats:title><jats:p>…``), without its opening heading."""
    lines = plain(jats).split("\n")
    return "\n".join(lines[1:] if lines[0].lower() in _HEADINGS else lines)
