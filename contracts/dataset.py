"""The finished dataset: rows, their citations, and statistics."""

from __future__ import annotations

from typing import Literal

from contracts.base import FieldValue, Record
from contracts.fields import FieldDefinition
from contracts.review import ReviewEntry, RowReview
from contracts.screening import Confidence, Flow, Paper

#: ``Citation.source_id`` of a value litminer made itself (an identifier derived from the row's key)
GENERATED_SOURCE = "generated"


class CitationMetadata(Record, frozen=True, kw_only=True):
    """Bibliographic data of the cited source."""

    title: str
    doi: str | None = None
    authors: list[str] = []
    year: int | None = None
    source: str = ""
    url: str | None = None
    venue: str | None = None
    arxiv_id: str | None = None
    cited_by: int | None = None
    license: str | None = None
    oa_status: str | None = None
    publication_type: str | None = None
    #: the paper was retracted: a row citing it is never more than low confidence
    retracted: bool = False


#: the part of a document a quote was found in
TextPart = Literal["title", "abstract", "full_text"]


class Citation(Record, frozen=True, kw_only=True):
    """A verbatim passage backing one field of a row, and where it is in the document.

    ``char_start``/``char_end`` are offsets into the document's ``part`` (its title, abstract or full text)
    where ``text_span`` is, exactly; ``page_number`` (from 1) and ``section`` are known for full texts with
    pages and headings. ``before`` and ``after`` are the sentence either side of the quote, for reading it in
    context.
    """

    source_id: str
    field: str
    text_span: str
    metadata: CitationMetadata
    part: TextPart | None = None
    char_start: int | None = None
    char_end: int | None = None
    page_number: int | None = None
    section: str | None = None
    before: str = ""
    after: str = ""


class DatasetRow(Record, frozen=True, kw_only=True):
    """One row of the dataset with the citations behind its values.

    ``row_id`` is stable for the same entity across reprocessing (a slug of its key, unique in the dataset);
    reviews address rows by it. ``review`` is the row's review state, present once anyone reviewed it: its
    ``row`` then holds the reviewed values (the extraction's are in ``review.cells[field].original``).
    """

    row: dict[str, FieldValue]
    citations: list[Citation]
    flags: dict[str, str] = {}
    #: how sure the dataset is of the row, and of each filled cell (docs/quality.md says how it is computed)
    confidence: Confidence = "low"
    cell_confidence: dict[str, Confidence] = {}
    #: why: "2 papers, exact quotes, no conflicts, screening score 100%", and the model's reason when it gave one
    basis: str = ""
    row_id: str = ""
    review: RowReview | None = None
    #: the candidate rows (``CandidateRow.candidate``) merged into this row, best-ranked first
    candidates: list[str] = []


class ExtractionStats(Record, frozen=True, kw_only=True):
    """What extraction did: who served it, what it cost, and how much of what it said held up."""

    extractor: str = ""
    provider: str | None = None
    base_url: str | None = None
    model: str | None = None
    response_format: str | None = None
    documents: int = 0
    documents_extracted: int = 0
    documents_cached: int = 0
    documents_failed: int = 0
    documents_skipped: int = 0
    batches: int = 0
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    values_verified: int = 0
    values_repaired: int = 0
    values_rejected: int = 0
    values_unconvertible: int = 0
    rows_dropped: int = 0
    #: candidate rows (and single values) the row checks dropped, by reason
    dropped_by_check: dict[str, int] = {}
    #: documents the model screened out before extraction, and the calls that took
    documents_screened_out: int = 0
    screening_calls: int = 0
    budget_exhausted: bool = False
    #: answers of 429 (rate limited) the provider gave; each call was waited for and asked again
    rate_limited: int = 0


class ConflictValue(Record, frozen=True, kw_only=True):
    """One value stated for a field of a merged row, with the sources stating it."""

    value: FieldValue
    support: int
    sources: list[str]
    citations: list[Citation] = []


class Conflict(Record, frozen=True, kw_only=True):
    """Sources disagreeing on a field of one row: the value kept (most support) and the others."""

    row: str
    field: str
    chosen: ConflictValue
    alternatives: list[ConflictValue]


class DatasetStats(Record, frozen=True, kw_only=True):
    """How the dataset was made, and why it may hold fewer rows than asked."""

    requested_rows: int
    returned_rows: int
    documents_searched: int = 0
    documents_with_rows: int = 0
    candidate_rows: int = 0
    rows_dropped_missing_required: int = 0
    rows_merged: int = 0
    distinct_rows: int = 0
    merge_threshold: float = 0
    conflicts: list[Conflict] = []
    sources: list[str] = []
    extractor: str = ""
    extraction: ExtractionStats | None = None
    durations_s: dict[str, float] = {}
    parent_task_id: str | None = None
    reused_stages: list[str] = []
    shortfall: str | None = None
    #: the documents' way from search to citation, PRISMA-style
    flow: Flow | None = None
    #: the search queries the job ran, in order
    queries: list[str] = []
    #: every candidate row not in a row's ``candidates``, and why (a required value missing, ranked below the
    #: rows requested)
    dropped_candidates: dict[str, str] = {}


class Dataset(Record, frozen=True, kw_only=True):
    """A generated dataset."""

    task_id: str
    model_name: str
    query: str
    schema: list[FieldDefinition]
    rows: list[DatasetRow]
    stats: DatasetStats
    #: every document the search considered, with the screening's decision and reason
    papers: list[Paper] = []
    #: the audit trail of reviews, oldest first (``?original=true`` gives the dataset as extracted, without them)
    review: list[ReviewEntry] = []
