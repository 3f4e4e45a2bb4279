"""The Source interface: something that answers a query with pages of ranked documents."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import msgspec

from contracts import Document, Section

if TYPE_CHECKING:
    from pipeline.sources.http import SourceHttp


class Page(msgspec.Struct, frozen=True, kw_only=True):
    """One answer of a source: documents best first, whether another page exists, and warnings."""

    documents: list[Document]
    more: bool = False
    warnings: list[str] = []


class Source(Protocol):
    """A searchable collection of scholarly records."""

    name: str

    def pages(self, query: str, size: int, http: SourceHttp) -> AsyncIterator[Page]:
        """Pages of about ``size`` documents for ``query``, best first, until the source has no more."""
        ...


class FullText(msgspec.Struct, frozen=True, kw_only=True):
    """A document's full text with its structure: where each page starts (offsets into ``text``; empty when
    it has no pages) and its section headings, never glued into its sentences; ``origin`` is where it came from
    (a URL or a library file)."""

    text: str
    pages: list[int] = []
    sections: list[Section] = []
    origin: str = ""


@runtime_checkable
class FullTextSource(Protocol):
    """A source that can fetch a document's full text after the search stage has chosen it."""

    name: str

    async def full_text(self, document: Document, http: SourceHttp) -> FullText | None:
        """The document's full text, or None when the source has none for it."""
        ...
