"""Screening: the user's inclusion criteria, and the judgement of every document the search considered."""

from __future__ import annotations

from typing import Literal

from contracts.base import Inbound, Record

CriterionKind = Literal["include", "exclude"]
#: what became of a document: read by extraction, screened out, or passed but ranked below the documents read
Decision = Literal["included", "excluded", "not_reached"]
#: how sure the dataset is of a row or a cell (docs/quality.md says how it is computed)
Confidence = Literal["high", "medium", "low"]


class Criterion(Inbound, frozen=True, kw_only=True):
    """An inclusion or exclusion criterion, in the user's words ("randomised controlled trials")."""

    text: str
    kind: CriterionKind = "include"


class Paper(Record, frozen=True, kw_only=True):
    """One document the search considered, and the screening's judgement of it."""

    id: str
    title: str
    year: int | None = None
    doi: str | None = None
    url: str | None = None
    source: str = ""
    #: relevance to the question, 0–1 (the share of the question's concepts the document states)
    score: float = 0.0
    decision: Decision
    #: why, in words: the terms it states or misses, the criterion it meets, the model's reason
    reason: str
    #: the exclusion's kind, as the flow counts it ("off topic", "meets an exclusion criterion"…); None if included
    exclusion: str | None = None
    #: a passage of the document that shows its relevance (verbatim), when one was found
    quote: str | None = None
    #: rows of the dataset citing this document
    rows: int = 0
    retracted: bool = False
    #: whether the extractor read the document's full text, not only its abstract
    full_text: bool = False


class PaperVerdict(Record, frozen=True, kw_only=True):
    """The extractor's own screening of a paper the search passed (the LLM's), applied to the papers list."""

    included: bool
    reason: str
    exclusion: str | None = None
    quote: str | None = None


class Flow(Record, frozen=True, kw_only=True):
    """The documents' way through the job, counted as a PRISMA flow diagram counts them."""

    found: int = 0
    duplicates_removed: int = 0
    screened: int = 0
    excluded: int = 0
    excluded_by: dict[str, int] = {}
    not_reached: int = 0
    read: int = 0
    cited: int = 0
    #: the search queries that found the documents, in the order they ran
    queries: list[str] = []
