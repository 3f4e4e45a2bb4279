"""Documents found by the search stage and candidate rows found in them."""

from __future__ import annotations

from contracts.base import FieldValue, Record
from contracts.dataset import Citation


class Provenance(Record, frozen=True, kw_only=True):
    """Where a document was found: the source, its id there and its rank in that source's answer."""

    source: str
    id: str
    rank: int
    query: str = ""


class Section(Record, frozen=True, kw_only=True):
    """A heading of a document's full text and where its section starts (an offset into ``full_text``)."""

    heading: str
    start: int


class Document(Record, frozen=True, kw_only=True):
    """One paper or record, with the text the extractor reads and the metadata researchers cite it by.

    ``source`` and ``id`` name the source that found it first; ``provenance`` lists every source that
    returned it (the search stage merges duplicates across sources, and a preprint with its published
    version). ``full_text`` keeps its structure apart from its words: ``pages`` holds the offset where
    each page starts (page 1 at 0; empty when the text has no pages) and ``sections`` the headings.
    """

    id: str
    title: str
    abstract: str = ""
    full_text: str | None = None
    pages: list[int] = []
    sections: list[Section] = []
    #: where the full text came from: the URL it was downloaded from, or the library file it was read from
    full_text_from: str | None = None
    authors: list[str] = []
    year: int | None = None
    doi: str | None = None
    #: the arXiv identifier without its version ("2304.02623"), for a preprint or its published version
    arxiv_id: str | None = None
    url: str | None = None
    venue: str | None = None
    #: open-access copies to read the full text from (PDF or JATS), best first
    pdf_urls: list[str] = []
    open_access: bool | None = None
    #: OpenAlex's open-access status: gold, green, hybrid, bronze, diamond or closed
    oa_status: str | None = None
    license: str | None = None
    cited_by: int | None = None
    #: the kind of work as its source names it ("article", "preprint", "review", "journal-article"…)
    publication_type: str | None = None
    retracted: bool = False
    source: str
    rank: int = 0
    score: float = 0.0
    provenance: list[Provenance] = []


class ExtractedRow(Record, frozen=True, kw_only=True):
    """One row as an extractor states it, before the grounding check: values and one quote per value.

    This is the fixed reply shape asked of the LLM (``{"rows": [{"values": …, "evidence": …, "answers_question":
    …, "reason": …}]}``). An extractor that judges its rows says whether each answers the question, and why;
    ``None`` means not judged (the offline extractor), and the row checks judge it lexically instead.
    """

    values: dict[str, FieldValue] = {}
    evidence: dict[str, str | None] = {}
    answers_question: bool | None = None
    reason: str | None = None


class ExtractionReply(Record, frozen=True, kw_only=True):
    """What an extractor returns for one document (or one chunk of it)."""

    rows: list[ExtractedRow] = []


class CandidateRow(Record, frozen=True, kw_only=True):
    """A grounded row from one document, before assembly merges rows across documents.

    ``flags`` names fields whose stated value could not be converted to the column type (field → why);
    ``repaired`` the fields whose quote matched only after repair (fuzzily); ``relevance`` is the document's
    screening score and ``reason`` the extractor's own reason the row answers the question, when it gave one.
    ``candidate`` is the row's id, ``"{source_id}#{n}"`` with ``n`` its place among its document's grounded
    rows: the same for a redelivered batch, unique in a run; the ``row_found`` event and the dataset's
    ``candidates`` and ``dropped_candidates`` name the row by it ("" for rows stored before ids existed).
    """

    values: dict[str, FieldValue]
    citations: list[Citation]
    source_id: str
    rank: int
    candidate: str = ""
    flags: dict[str, str] = {}
    repaired: list[str] = []
    relevance: float = 0.0
    reason: str | None = None
