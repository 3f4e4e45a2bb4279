"""arXiv API search: https://info.arxiv.org/help/api (Atom XML; no more than one request every 3 s)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from functools import partial
from xml.etree.ElementTree import Element

import msgspec
from defusedxml import ElementTree

from contracts import Document, Provenance
from pipeline.sources.base import Page
from pipeline.sources.http import Limits, SourceHttp
from pipeline.sources.markup import normalise_doi

_NS = {
    "atom": "http://www.w3.org/2005/Atom",
    "opensearch": "http://a9.com/-/spec/opensearch/1.1/",
    "arxiv": "http://arxiv.org/schemas/atom",
}
_PHRASE = re.compile(r'"([^"]+)"|(\S+)')
#: a new-style ("2304.02623") or old-style ("math/0211159", "math.GT/0309136") identifier, maybe versioned
_ARXIV_ID = re.compile(r"(\d{4}\.\d{4,5}|[a-z][a-z-]*(?:\.[a-z]{2})?/\d{7})(?:v\d+)?", re.I)
#: what comes before an identifier in an abs or pdf URL, an arXiv DOI (registered by DataCite) or a citation
_ARXIV_PREFIX = re.compile(r"^(?:.*arxiv\.org/(?:abs|pdf)/|.*10\.48550/arxiv\.|arxiv:)", re.I)


class Feed(msgspec.Struct, frozen=True, kw_only=True):
    """One page of the feed: how many entries the query matched in all, how many this page holds, its documents."""

    total: int
    entries: int
    documents: list[Document]


def arxiv_id(reference: str | None) -> str | None:
    """The arXiv identifier without its version in an abs or pdf URL, an arXiv DOI or a bare identifier.

    ``http://arxiv.org/abs/1111.2011v2`` → ``1111.2011``, ``10.48550/arXiv.2304.02623`` → ``2304.02623``,
    ``math/0211159v1`` → ``math/0211159``; None for anything else (another DOI, a publisher's URL).
    """
    if not reference:
        return None
    text = _ARXIV_PREFIX.sub("", re.split(r"[?#]", reference.strip())[0]).removesuffix(".pdf").rstrip("/")
    match = _ARXIV_ID.fullmatch(text)
    return match.group(1) if match else None


def search_query(query: str) -> str:
    """arXiv's query syntax for a planned query: every word or quoted phrase must occur (``all:``)."""
    terms = []
    for phrase, word in _PHRASE.findall(query):
        text = (phrase or word).replace('"', "").strip()
        if text:
            terms.append(f'all:"{text}"' if " " in text else f"all:{text}")
    return " AND ".join(terms)


class Arxiv:
    """Preprints in physics, computer science, quantitative biology and more; abstracts always present."""

    name = "arxiv"
    limits = Limits(per_second=1 / 3, concurrent=1)  # "no more than one request every three seconds"
    max_page = 100

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    async def pages(self, query: str, size: int, http: SourceHttp) -> AsyncIterator[Page]:
        start, per_page = 0, min(size, self.max_page)
        while True:
            params: dict[str, str | int] = {
                "search_query": search_query(query),
                "start": start,
                "max_results": per_page,
            }
            feed = await http.get(
                self.name,
                self.limits,
                f"{self.base_url}/query",
                params=params,
                parse=partial(parse_feed, query=query, start=start),
            )
            start += feed.entries
            more = feed.entries > 0 and start < feed.total
            yield Page(documents=feed.documents, more=more)
            if not more:
                return


def parse_feed(body: bytes, *, start: int = 0, query: str = "") -> Feed:
    """The documents of one Atom answer, ranked from ``start + 1``; entries without a title are left out.

    Raises ``ValueError`` for a body that is not a feed, or is arXiv's error feed (one entry naming the error).
    """
    root = ElementTree.fromstring(body)
    if root.tag != f"{{{_NS['atom']}}}feed":
        raise ValueError(f"expected an Atom feed, got <{root.tag}>")
    entries = root.findall("atom:entry", _NS)
    if len(entries) == 1 and "/api/errors" in _text(entries[0], "atom:id"):
        raise ValueError(f"arXiv rejected the query: {_text(entries[0], 'atom:summary')}")
    total = int(_text(root, "opensearch:totalResults") or 0)
    documents = [_document(e, start + i, query) for i, e in enumerate(entries, start=1)]
    return Feed(total=total, entries=len(entries), documents=[d for d in documents if d.title])


def _document(entry: Element, rank: int, query: str) -> Document:
    abs_url = _text(entry, "atom:id")
    preprint = arxiv_id(abs_url)
    document_id = f"arXiv:{preprint or abs_url.rsplit('/abs/', 1)[-1]}"  # one document for every version
    links = entry.findall("atom:link", _NS)
    pdf = next((link.get("href") for link in links if link.get("title") == "pdf"), None)
    published = _text(entry, "atom:published")
    return Document(
        id=document_id,
        title=" ".join(_text(entry, "atom:title").split()),
        abstract=" ".join(_text(entry, "atom:summary").split()),
        authors=[" ".join(_text(a, "atom:name").split()) for a in entry.findall("atom:author", _NS)],
        year=int(published[:4]) if published[:4].isdigit() else None,
        doi=normalise_doi(_text(entry, "arxiv:doi")),
        arxiv_id=preprint,
        url=abs_url,
        venue=_text(entry, "arxiv:journal_ref") or "arXiv",
        pdf_urls=[pdf] if pdf else [],
        open_access=True,
        license=_text(entry, "arxiv:license") or None,
        publication_type="preprint",
        source="arxiv",
        rank=rank,
        provenance=[Provenance(source="arxiv", id=document_id, rank=rank, query=query)],
    )


def _text(element: Element, path: str) -> str:
    found = element.find(path, _NS)
    return (found.text or "").strip() if found is not None else ""
