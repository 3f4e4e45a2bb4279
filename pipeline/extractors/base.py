"""The Extractor interface: reads one document and states rows, each value with a quote to check."""

from __future__ import annotations

from typing import Protocol

import msgspec

from contracts import CitationMetadata, Criterion, Document, ExtractedRow, PreparedSchema


class Extraction(msgspec.Struct, kw_only=True, frozen=True):
    """What an extractor made of one document, and what it cost. Cached, so it is a Struct."""

    rows: list[ExtractedRow] = []
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: why the document was given up (a malformed reply twice…); such results are never cached
    failure: str | None = None
    response_format: str | None = None
    #: answers of 429 (rate limited) before the calls went through
    rate_limited: int = 0


class Verdict(msgspec.Struct, kw_only=True, frozen=True):
    """A model's screening decision on one document (its ``id``), with a reason and a supporting quote."""

    id: str
    include: bool
    reason: str = ""
    quote: str | None = None


class ScreeningReply(msgspec.Struct, kw_only=True, frozen=True):
    """The fixed reply shape asked of the LLM when screening: ``{"decisions": [...]}``."""

    decisions: list[Verdict] = []


class Screening(msgspec.Struct, kw_only=True, frozen=True):
    """What an extractor's screening of a batch said and cost; ``judged`` is False for an extractor that does
    not screen (the search's lexical screening stands)."""

    verdicts: list[Verdict] = []
    judged: bool = False
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failure: str | None = None


class ExtractorInfo(msgspec.Struct, kw_only=True, frozen=True):
    """Who serves an extractor: recorded in the job's stats and its first extraction event."""

    name: str
    provider: str | None = None
    base_url: str | None = None
    model: str | None = None

    @property
    def identity(self) -> str:
        """What an extraction result depends on besides the inputs (part of the cache key)."""
        return f"{self.name}|{self.base_url}|{self.model}"


class Extractor(Protocol):
    """Turns a document into zero or more rows that fit the schema."""

    name: str
    #: bumped whenever prompts or parsing change what the extractor returns (part of the cache key)
    version: str
    #: results are worth caching in Redis (they cost calls and tokens)
    cached: bool

    def info(self) -> ExtractorInfo:
        """Who serves this extractor."""
        ...

    async def extract(self, query: str, schema: PreparedSchema, document: Document) -> Extraction:
        """Rows stated by ``document``, each filled value with a quote from it (checked afterwards)."""
        ...

    async def screen(self, query: str, criteria: list[Criterion], documents: list[Document]) -> Screening:
        """Whether each document answers the question and meets the criteria (title and abstract only)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def citation_metadata(document: Document) -> CitationMetadata:
    """What a citation of ``document`` says about it: how to cite it and what a reader should know (retracted)."""
    return CitationMetadata(
        title=document.title,
        doi=document.doi,
        authors=document.authors,
        year=document.year,
        source=document.source,
        url=document.url,
        venue=document.venue,
        arxiv_id=document.arxiv_id,
        cited_by=document.cited_by,
        license=document.license,
        oa_status=document.oa_status,
        publication_type=document.publication_type,
        retracted=document.retracted,
    )
