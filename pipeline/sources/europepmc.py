"""Europe PMC REST search: https://europepmc.org/RestfulWebService (no key; JATS full text for open access)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec

from contracts import Document, Provenance
from pipeline.sources.base import FullText, Page
from pipeline.sources.http import Limits, SourceHttp
from pipeline.sources.markup import jats_text, normalise_doi, plain


class _Author(msgspec.Struct, rename="camel"):
    full_name: str | None = None


class _AuthorList(msgspec.Struct):
    author: list[_Author] = []


class _Journal(msgspec.Struct):
    title: str | None = None


class _JournalInfo(msgspec.Struct):
    journal: _Journal | None = None


class _PubTypeList(msgspec.Struct, rename="camel"):
    pub_type: list[str] = []


class _FullTextUrl(msgspec.Struct, rename="camel"):
    url: str
    availability: str | None = None
    document_style: str | None = None


class _FullTextUrlList(msgspec.Struct, rename="camel"):
    full_text_url: list[_FullTextUrl] = []


class _Result(msgspec.Struct, rename="camel"):
    id: str
    source: str = "MED"
    pmcid: str | None = None
    doi: str | None = None
    title: str | None = None
    author_string: str | None = None
    author_list: _AuthorList | None = None
    pub_year: str | None = None
    journal_info: _JournalInfo | None = None
    abstract_text: str | None = None
    is_open_access: str | None = None
    cited_by_count: int | None = None
    license: str | None = None
    pub_type_list: _PubTypeList | None = None
    full_text_url_list: _FullTextUrlList | None = None


class _ResultList(msgspec.Struct):
    result: list[_Result] = []


class _Search(msgspec.Struct, rename="camel"):
    hit_count: int = 0
    next_cursor_mark: str | None = None
    result_list: _ResultList = msgspec.field(default_factory=_ResultList)


_decode = msgspec.json.Decoder(_Search).decode

#: open PDF copies, best first: open access (licensed for reuse) before merely free to read
_PDF_AVAILABILITY = ("Open access", "Free")


class EuropePMC:
    """PubMed, PMC and preprints; abstracts in the ``core`` result type, full text for the open-access subset."""

    name = "europepmc"
    limits = Limits(per_second=5, concurrent=3)  # no published limit; kept well below what the service tolerates
    max_page = 100

    def __init__(self, base_url: str, *, email: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.email = email

    async def pages(self, query: str, size: int, http: SourceHttp) -> AsyncIterator[Page]:
        cursor: str | None = "*"
        rank = 0
        while cursor:
            params: dict[str, str | int] = {
                "query": query,
                "format": "json",
                "resultType": "core",
                "pageSize": min(size, self.max_page),
                "cursorMark": cursor,
            }
            if self.email:
                params["email"] = self.email
            answer = await http.get(self.name, self.limits, f"{self.base_url}/search", params=params, parse=_decode)
            documents = self._documents(answer, rank, query)
            rank += len(documents)
            following = answer.next_cursor_mark
            cursor = following if documents and following and following != cursor else None
            yield Page(documents=documents, more=cursor is not None)

    async def full_text(self, document: Document, http: SourceHttp) -> FullText | None:
        """The body of the article's open-access JATS XML, when Europe PMC holds it."""
        pmcid = next((p.id for p in document.provenance if p.source == self.name and p.id.startswith("PMC")), None)
        if pmcid is None or not document.open_access:
            return None
        url = f"{self.base_url}/{pmcid}/fullTextXML"
        found = await http.get(self.name, self.limits, url, parse=jats_text)
        return msgspec.structs.replace(found, origin=url) if found.text else None

    def _documents(self, answer: _Search, ranked: int, query: str) -> list[Document]:
        """The documents of one search answer, ranked after the ``ranked`` documents of the pages before."""
        return [self._document(x, ranked + i, query) for i, x in enumerate(answer.result_list.result, start=1)]

    def _document(self, result: _Result, rank: int, query: str) -> Document:
        record_id = result.pmcid or f"{result.source}:{result.id}"
        authors = [a.full_name for a in (result.author_list.author if result.author_list else []) if a.full_name]
        if not authors and result.author_string:
            authors = [a.strip() for a in result.author_string.rstrip(".").split(",") if a.strip()]
        journal = result.journal_info.journal if result.journal_info else None
        pub_types = result.pub_type_list.pub_type if result.pub_type_list else []
        return Document(
            id=record_id,
            title=plain(result.title).rstrip("."),
            abstract=plain(result.abstract_text),
            authors=authors,
            year=int(result.pub_year) if result.pub_year and result.pub_year.isdigit() else None,
            doi=normalise_doi(result.doi),
            url=f"https://europepmc.org/article/{result.source}/{result.id}",
            venue=journal.title if journal else None,
            pdf_urls=_pdf_urls(result.full_text_url_list),
            open_access=result.is_open_access == "Y",
            license=result.license,
            cited_by=result.cited_by_count,
            publication_type=pub_types[0].lower() if pub_types else None,
            retracted=any(t.lower() == "retracted publication" for t in pub_types),  # not its retraction notice
            source=self.name,
            rank=rank,
            provenance=[Provenance(source=self.name, id=record_id, rank=rank, query=query)],
        )


def _pdf_urls(urls: _FullTextUrlList | None) -> list[str]:
    """The open-access and free PDF copies Europe PMC lists, open access first."""
    found = [u for u in (urls.full_text_url if urls else []) if u.document_style == "pdf"]
    return [u.url for availability in _PDF_AVAILABILITY for u in found if u.availability == availability]
