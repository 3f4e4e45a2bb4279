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


class _Feed(msgspec.Struct, frozen=True):
    total: int
    entries: list[Document]


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
                parse=partial(_parse, query=query, start=start),
            )
            start += len(feed.entries)
            more = bool(feed.entries) and start < feed.total
            yield Page(documents=feed.entries, more=more)
            if not more:
                return


def _parse(body: bytes, query: str, start: int) -> _Feed:
    root = ElementTree.fromstring(body)
    if root.tag != f"{{{_NS['atom']}}}feed":
        raise ValueError(f"expected an Atom feed, got <{root.tag}>")
    entries = root.findall("atom:entry", _NS)
    if len(entries) == 1 and "/api/errors" in _text(entries[0], "atom:id"):
        raise ValueError(f"arXiv rejected the query: {_text(entries[0], 'atom:summary')}")
    total = int(_text(root, "opensearch:totalResults") or 0)
    return _Feed(total=total, entries=[_document(e, start + i, query) for i, e in enumerate(entries, start=1)])


def _document(entry: Element, rank: int, query: str) -> Document:
    abs_url = _text(entry, "atom:id")
    arxiv_id = abs_url.rsplit("/abs/", 1)[-1]
    links = entry.findall("atom:link", _NS)
    pdf = next((link.get("href") for link in links if link.get("title") == "pdf"), None)
    published = _text(entry, "atom:published")
    return Document(
        id=f"arXiv:{arxiv_id}",
        title=" ".join(_text(entry, "atom:title").split()),
        abstract=" ".join(_text(entry, "atom:summary").split()),
        authors=[" ".join(_text(a, "atom:name").split()) for a in entry.findall("atom:author", _NS)],
        year=int(published[:4]) if published[:4].isdigit() else None,
        doi=normalise_doi(_text(entry, "arxiv:doi")),
        url=abs_url,
        venue=_text(entry, "arxiv:journal_ref") or "arXiv",
        pdf_url=pdf,
        open_access=True,
        source="arxiv",
        rank=rank,
        provenance=[Provenance(source="arxiv", id=f"arXiv:{arxiv_id}", rank=rank, query=query)],
    )


def _text(element: Element, path: str) -> str:
    found = element.find(path, _NS)
    return (found.text or "").strip() if found is not None else ""
