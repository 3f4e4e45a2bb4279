"""What an event's ``data`` says, one Struct per kind of event, and where each stage sits on the progress scale.

Stages build these Structs; the store writes them into ``Event.data`` with their ``kind`` tag
(``{"kind": "search_done", "documents": 20, …}``); the CLI and the page read them back by the same names
(``read_data``). Renaming a field here is a change of the event format: clients see it.
"""

from __future__ import annotations

from typing import TypeAlias

import msgspec

from contracts.base import EventValue, FieldValue
from contracts.jobs import Stage

#: where each stage starts on the 0–100 progress scale; a stage ends where the next one starts (the last at 100)
STAGE_START: dict[Stage, int] = {"schema_preparation": 0, "search": 10, "extraction": 35, "assembly": 90}
_STAGE_END: dict[Stage, int] = dict(zip(STAGE_START, [*list(STAGE_START.values())[1:], 100], strict=True))


def stage_end(stage: Stage) -> int:
    """The job's progress when ``stage`` hands off: the next stage's start, 100 after the last."""
    return _STAGE_END[stage]


def stage_progress(stage: Stage, done: float) -> int:
    """The job's progress when ``stage`` is ``done`` (0–1) of the way through; below the next stage's start
    until the stage hands off."""
    start, end = STAGE_START[stage], stage_end(stage)
    return start + int((end - start - 1) * min(max(done, 0.0), 1.0))


class EventData(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="kind"):
    """Base of every event's data; ``kind`` (the tag) says which Struct it is. Fields at their default (a
    warning that is None) are left out."""

    def as_data(self) -> dict[str, EventValue]:
        """The data as ``Event.data`` carries it, ``kind`` included."""
        data: dict[str, EventValue] = msgspec.to_builtins(self)
        return data


# -- every stage --------------------------------------------------------------------------------------


class StageStarted(EventData, frozen=True, kw_only=True, tag="stage_started"):
    """A stage (or one extraction batch) began: which attempt, and how many earlier deliveries died."""

    attempt: int
    crashes: int = 0


class StageRetrying(EventData, frozen=True, kw_only=True, tag="stage_retrying"):
    """A stage failed and runs again after ``delay_ms`` (retry number ``retry``)."""

    retry: int
    delay_ms: int
    error: str


# -- schema preparation -------------------------------------------------------------------------------


class SchemaPrepared(EventData, frozen=True, kw_only=True, tag="schema_prepared"):
    """The schema is ready: how many fields, and which names a row's entity."""

    fields: int
    key_field: str | None


# -- search -------------------------------------------------------------------------------------------


class SearchPlanned(EventData, frozen=True, kw_only=True, tag="search_planned"):
    """The search begins: the sources asked (comma-separated), the planned queries (``" | "``) and how many
    documents it aims for."""

    sources: str
    queries: str
    target: int


class SourcePage(EventData, frozen=True, kw_only=True, tag="source_page"):
    """One page of one source's answer: its documents, and how many documents with text are in hand."""

    source: str
    query: str
    documents: int
    usable: int


class SourceWarning(EventData, frozen=True, kw_only=True, tag="source_warning"):
    """A source said something worth knowing (a skipped library file, a capped answer)."""

    source: str
    warning: str


class SourceFailed(EventData, frozen=True, kw_only=True, tag="source_failed"):
    """A source failed after its retries; the search goes on without it."""

    source: str
    error: str


class FullTextFetched(EventData, frozen=True, kw_only=True, tag="full_text_fetched"):
    """The kept documents' full text: ``full_text`` of ``documents`` have it; ``failed`` have an open-access
    copy that could not be read; ``reasons`` says why the others have none ("3 no open-access copy; 1 HTTP 404")."""

    full_text: int
    documents: int = 0
    failed: int = 0
    reasons: str = ""


class SearchDone(EventData, frozen=True, kw_only=True, tag="search_done"):
    """The search's last event: documents kept, of those found, and what happened on the way."""

    documents: int
    found: int
    duplicates: int
    without_text: int
    sources: str
    #: documents screened, screened out, and passed but ranked below the documents kept
    screened: int = 0
    excluded: int = 0
    not_reached: int = 0
    #: documents each source returned; carried as one key per source, ``found_<source>``
    found_by_source: dict[str, int] = {}
    #: why each failed source failed; carried as one key per source, ``failed_<source>``
    failures: dict[str, str] = {}
    #: documents screened out by kind ("off topic"…); carried as ``excluded_<kind, words joined by _>``
    excluded_by: dict[str, int] = {}

    def as_data(self) -> dict[str, EventValue]:
        data = super().as_data()
        for name in ("found_by_source", "failures", "excluded_by"):
            data.pop(name, None)
        return (
            data
            | {f"found_{name}": count for name, count in self.found_by_source.items()}
            | {f"failed_{name}": reason for name, reason in self.failures.items()}
            | {f"excluded_{kind.replace(' ', '_')}": count for kind, count in self.excluded_by.items()}
        )


# -- extraction ---------------------------------------------------------------------------------------


class ExtractionPlanned(EventData, frozen=True, kw_only=True, tag="extraction_planned"):
    """Extraction begins: who extracts, how many documents in how many batches."""

    extractor: str
    provider: str | None
    base_url: str | None
    model: str | None
    documents: int
    batches: int


class DocumentExtracted(EventData, frozen=True, kw_only=True, tag="document_extracted"):
    """One more document was read: how many of the stage's are done, the rows it gave, the job's tokens so far.

    ``warning`` says why the document was skipped, when it was.
    """

    documents_done: int
    documents: int
    rows: int
    tokens: int
    warning: str | None = None
    document: str | None = None


#: a ``RowFound``'s values travel as one ``value_<field>`` key each
VALUE_PREFIX = "value_"
#: the longest paper title a ``RowFound`` carries
TITLE_CHARS = 200


class RowFound(EventData, frozen=True, kw_only=True, tag="row_found"):
    """A verified candidate row, sent as soon as its document is read: its id (``CandidateRow.candidate``), its
    document's id and title, and its values (every field of the schema, None when the paper states none).

    ``values`` travel flat, one key per field, ``value_<field>``; a list or dict value as its JSON text, with its
    field named in ``json_fields`` (comma-separated). ``read_data`` gives the values back (``values_from``).
    """

    candidate: str
    document: str
    title: str
    values: dict[str, FieldValue] = {}

    def as_data(self) -> dict[str, EventValue]:
        data = super().as_data()
        data.pop("values", None)
        encoded = []
        for name, value in self.values.items():
            if isinstance(value, list | dict):
                encoded.append(name)
                data[VALUE_PREFIX + name] = _encode(value).decode()
            else:
                data[VALUE_PREFIX + name] = value
        if encoded:
            data["json_fields"] = ",".join(encoded)
        return data

    @staticmethod
    def values_from(data: dict[str, EventValue]) -> dict[str, FieldValue]:
        """The row's values from an event's ``data``, lists and dicts decoded, in the order they were sent."""
        encoded = set(str(data.get("json_fields") or "").split(","))
        values: dict[str, FieldValue] = {}
        for key, value in data.items():
            if not key.startswith(VALUE_PREFIX):
                continue
            name = key.removeprefix(VALUE_PREFIX)
            values[name] = _decode_json(value) if name in encoded and isinstance(value, str) else value
        return values


_encode = msgspec.json.Encoder().encode
_decode_json = msgspec.json.Decoder(list[object] | dict[str, object]).decode


class BudgetReached(EventData, frozen=True, kw_only=True, tag="budget_reached"):
    """The job's token budget is spent: the remaining documents are skipped."""

    budget: int
    warning: str = "token budget reached"


class ExtractionDone(EventData, frozen=True, kw_only=True, tag="extraction_done"):
    """Extraction's last event: candidate rows, how their values held up, tokens spent."""

    candidate_rows: int
    extractor: str
    values_verified: int
    values_repaired: int
    values_rejected: int
    prompt_tokens: int
    completion_tokens: int
    #: candidate rows and values the row checks dropped, and documents the model screened out
    dropped_by_check: int = 0
    screened_out: int = 0


# -- the end ------------------------------------------------------------------------------------------


class JobCompleted(EventData, frozen=True, kw_only=True, tag="job_completed"):
    """The dataset is ready: rows returned of those requested, and why fewer, if so."""

    rows: int
    requested_rows: int
    shortfall: str | None = None


class EstimateReady(EventData, frozen=True, kw_only=True, tag="estimate_ready"):
    """An estimate's end: what extraction would spend (``GET /api/v1/tasks/{task_id}/estimate`` has it all).

    ``budget`` is 0 without one; ``cost_usd`` is left out when the model has no price.
    """

    documents: int
    calls: int
    prompt_tokens: int
    completion_tokens: int
    completion_basis: str
    budget: int
    over_budget: bool
    documents_within_budget: int
    cost_usd: float | None = None


AnyEventData: TypeAlias = (
    StageStarted
    | StageRetrying
    | SchemaPrepared
    | SearchPlanned
    | SourcePage
    | SourceWarning
    | SourceFailed
    | FullTextFetched
    | SearchDone
    | ExtractionPlanned
    | DocumentExtracted
    | RowFound
    | BudgetReached
    | ExtractionDone
    | JobCompleted
    | EstimateReady
)

#: data kinds that carry a warning or an error worth showing (the CLI prints them in yellow)
WARNINGS: tuple[type[EventData], ...] = (StageRetrying, SourceWarning, SourceFailed, BudgetReached)


def read_data(data: dict[str, EventValue]) -> AnyEventData | None:
    """An event's data as its Struct; None when it has none (or a kind this version does not know)."""
    if "kind" not in data:
        return None
    try:
        read: AnyEventData = msgspec.convert(data, AnyEventData)
        if isinstance(read, RowFound):
            return msgspec.structs.replace(read, values=RowFound.values_from(data))
    except msgspec.DecodeError:  # also covers ValidationError; a value said to be JSON that is not
        return None
    return read
