"""Cost estimates: the LLM calls extraction would make on a job's documents, their tokens and their price, counted
without calling the LLM.

The calls are those ``OpenAIExtractor`` makes, built from the same code: one screening call per batch of
``LITMINER_EXTRACT_BATCH`` documents (``prompts.screening_messages``), then one extraction call per chunk of each
document (``llm.chunks_of``, ``prompts.messages``), as if the screening kept every document. Prompt tokens are the
requests' own (``chunks.request_tokens``: OpenAI's tokenizer when tiktoken is installed, else estimated from the
words). Completion tokens cannot be counted before the model answers, so they are guessed from the schema: one row
per extraction call, each asked field with a value of its type and a quoted sentence, and one decision per document
screened (``guessed_completion``). When this deployment has run the model before, the guess is scaled by what its
replies really took against what was guessed for them (``LlmUsage``, recorded at the end of every extraction run).
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts import Criterion, Document, Estimate, FieldType, PreparedSchema
from pipeline.extractors.base import ExtractorInfo
from pipeline.extractors.chunks import request_tokens
from pipeline.settings import Settings
from pipeline.store.extraction import LlmUsage
from pipeline.text import plural

#: completion tokens of one value of each type, as JSON (a short phrase, a number, a date…)
_VALUE_TOKENS: dict[FieldType, int] = {
    "str": 8,
    "int": 2,
    "float": 3,
    "bool": 1,
    "date": 6,
    "list": 14,
    "list[str]": 14,
    "list[int]": 8,
    "list[float]": 10,
    "dict": 24,
}
#: a value's evidence: one quoted sentence
_QUOTE_TOKENS = 32
#: the JSON around one field of a row: its name twice (values and evidence), quotes, colons, commas
_FIELD_TOKENS = 8
#: one row besides its fields: braces, ``answers_question`` and a one-sentence ``reason``
_ROW_TOKENS = 28
#: one screening decision: the id, ``include``, a one-sentence reason and a quoted sentence
_DECISION_TOKENS = 64
#: the reply around its rows or decisions
_REPLY_TOKENS = 4


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """One call extraction would make: a batch's screening (``document`` None) or a chunk of one document."""

    document: str | None
    prompt_tokens: int
    #: completion tokens guessed from the schema (``guessed_completion``), before any scaling by history
    guessed_tokens: int


def row_tokens(schema: PreparedSchema) -> int:
    """Completion tokens guessed for one row of ``schema``: each asked field's value, its quote and its JSON."""
    from pipeline.extractors.prompts import asked_fields  # noqa: PLC0415  (openai's types: only with an LLM)

    fields = asked_fields(schema)
    return _ROW_TOKENS + sum(_VALUE_TOKENS[f.type] + _QUOTE_TOKENS + _FIELD_TOKENS for f in fields)


def guessed_completion(
    schema: PreparedSchema, *, extraction_calls: int, screening_calls: int, documents_per_screening: float
) -> int:
    """Completion tokens guessed for a run's calls: one row per extraction call, one decision per document
    screened (``documents_per_screening`` on average per screening call)."""
    extraction = extraction_calls * (_REPLY_TOKENS + row_tokens(schema))
    screening = screening_calls * (_REPLY_TOKENS + documents_per_screening * _DECISION_TOKENS)
    return round(extraction + screening)


def plan_calls(
    query: str, criteria: list[Criterion], schema: PreparedSchema, documents: list[Document], settings: Settings
) -> list[PlannedCall]:
    """Every call ``OpenAIExtractor`` would make on ``documents``, in the order one worker would make them: each
    batch's screening, then each chunk of each of its documents."""
    # imported here: the openai package, which prompts and llm need, is loaded only by workers with an LLM
    from pipeline.extractors import prompts  # noqa: PLC0415
    from pipeline.extractors.llm import chunks_of  # noqa: PLC0415

    screening_format = prompts.screening_format(json_schema=True)
    reply_format = prompts.response_format(schema, json_schema=True)
    per_extraction = _REPLY_TOKENS + row_tokens(schema)
    calls: list[PlannedCall] = []
    size = settings.extract_batch_size
    for start in range(0, len(documents), size):
        batch = documents[start : start + size]
        screening = request_tokens(prompts.screening_messages(query, criteria, batch), screening_format)
        calls.append(PlannedCall(None, screening, round(_REPLY_TOKENS + len(batch) * _DECISION_TOKENS)))
        for document in batch:
            for chunk in chunks_of(document, settings):
                prompt = request_tokens(prompts.messages(query, schema, document, chunk), reply_format)
                calls.append(PlannedCall(document.id, prompt, per_extraction))
    return calls


def completion_scale(usage: LlmUsage) -> float | None:
    """How much the model's replies took against the guesses for them, over this deployment's recorded runs;
    None without any."""
    if usage.guessed_tokens <= 0 or usage.completion_tokens <= 0:
        return None
    return usage.completion_tokens / usage.guessed_tokens


def estimate(
    *,
    task_id: str,
    info: ExtractorInfo,
    documents: list[Document],
    batches: int,
    calls: list[PlannedCall],
    usage: LlmUsage,
    settings: Settings,
    budget: int,
) -> Estimate:
    """The estimate of extracting ``documents`` with ``calls`` (none: an extractor without an LLM), priced by
    ``LITMINER_LLM_PRICES`` and held against ``budget`` (0: none)."""
    scale = completion_scale(usage)
    factor = scale if scale is not None else 1.0
    prompt = sum(call.prompt_tokens for call in calls)
    completion = round(sum(call.guessed_tokens for call in calls) * factor)
    price = settings.llm_prices.get(info.model) if info.model else None
    cost: float | None = 0.0 if not calls else None
    if calls and price is not None:
        cost = round((prompt * price[0] + completion * price[1]) / 1_000_000, 6)
    screening = sum(call.document is None for call in calls)
    return Estimate(
        task_id=task_id,
        extractor=info.name,
        provider=info.provider,
        base_url=info.base_url,
        model=info.model,
        documents=len(documents),
        batches=batches,
        screening_calls=screening,
        extraction_calls=len(calls) - screening,
        calls=len(calls),
        prompt_tokens=prompt,
        completion_tokens=completion,
        completion_basis="none" if not calls else "guess" if scale is None else "history",
        history_runs=usage.runs if calls and scale is not None else 0,
        input_price=price[0] if price is not None else None,
        output_price=price[1] if price is not None else None,
        cost_usd=cost,
        budget=budget,
        over_budget=bool(budget) and prompt + completion > budget,
        documents_within_budget=within_budget(documents, calls, budget, factor),
    )


def within_budget(documents: list[Document], calls: list[PlannedCall], budget: int, factor: float) -> int:
    """How many documents extraction reads before ``budget`` is spent, making ``calls`` one after another: a
    document is read whole once started, and none starts once the tokens spent reach the budget. A lower bound:
    the stage starts a batch's documents together and runs batches at once, so it may read a few more."""
    if not budget:
        return len(documents)
    spent, started = 0, dict[str, bool]()
    for call in calls:
        # a batch's screening is skipped once the budget is spent; a document's chunks follow its first
        allowed = spent < budget if call.document is None else started.setdefault(call.document, spent < budget)
        if allowed:
            spent += call.prompt_tokens + round(call.guessed_tokens * factor)
    with_calls = {call.document for call in calls if call.document is not None}
    return sum(started.values()) + sum(d.id not in with_calls for d in documents)


def summary(estimate: Estimate) -> str:
    """The estimate in one line, as the job's last event says it."""
    documents = plural(estimate.documents, "document")
    if not estimate.calls:
        return f"Estimate: {documents} read by {estimate.extractor}, no LLM call, no tokens"
    basis = {"history": "from this deployment's earlier runs", "guess": "guessed from the schema"}
    line = (
        f"Estimate: {documents}, {plural(estimate.calls, 'LLM call')}, {estimate.prompt_tokens:,} prompt + "
        f"{estimate.completion_tokens:,} completion tokens ({basis.get(estimate.completion_basis, 'none')})"
    )
    if estimate.cost_usd is not None:
        line += f", ${estimate.cost_usd:.4f}"
    if estimate.over_budget:
        line += (
            f"; over the budget of {estimate.budget:,} tokens: {estimate.documents_within_budget} of "
            f"{estimate.documents} would be read"
        )
    elif estimate.budget:
        line += f"; within the budget of {estimate.budget:,} tokens"
    return line
