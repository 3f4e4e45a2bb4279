"""The Extractor interface: reads one document and returns candidate rows with quoted evidence."""

from __future__ import annotations

from typing import Protocol

from contracts import CandidateRow, Citation, CitationMetadata, Document, PreparedSchema


class Extractor(Protocol):
    """Turns a document into zero or more rows that fit the schema."""

    name: str

    def extract(self, query: str, schema: PreparedSchema, document: Document) -> list[CandidateRow]:
        """Rows stated by ``document``; every filled value cites a verbatim passage of it."""
        ...


class ExtractionError(RuntimeError):
    """Extraction failed; transient unless stated otherwise."""


def cite(document: Document, field: str, text_span: str) -> Citation:
    """A citation of ``text_span`` in ``document`` backing ``field``."""
    return Citation(
        source_id=document.id,
        field=field,
        text_span=text_span,
        metadata=CitationMetadata(
            title=document.title,
            doi=document.doi,
            authors=document.authors,
            year=document.year,
            source=document.source,
            url=document.url,
        ),
    )
