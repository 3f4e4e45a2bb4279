"""What running a job would cost, counted before any LLM call: ``GET /api/v1/tasks/{task_id}/estimate``."""

from __future__ import annotations

from typing import Literal

from contracts.base import Record

#: where an estimate's completion tokens come from: this deployment's earlier runs of the model ("history"), the
#: schema alone ("guess"), or nowhere because no call is made ("none": an extractor without an LLM)
CompletionBasis = Literal["history", "guess", "none"]


class Estimate(Record, frozen=True, kw_only=True):
    """The LLM calls, tokens and money extraction would spend on the documents the search kept, and whether
    the job's token budget holds them.

    Extraction calls count every chunk of every document, as if the model's screening kept them all (an
    upper bound); documents already extracted in the cache are counted too.
    """

    task_id: str
    extractor: str
    provider: str | None = None
    base_url: str | None = None
    model: str | None = None
    documents: int
    batches: int
    screening_calls: int
    extraction_calls: int
    #: screening and extraction calls together
    calls: int
    prompt_tokens: int
    completion_tokens: int
    completion_basis: CompletionBasis
    #: extraction runs of this model the history holds (with ``completion_basis`` "history")
    history_runs: int = 0
    #: USD per million prompt and completion tokens (``LITMINER_LLM_PRICES``); None when the model has no price
    input_price: float | None = None
    output_price: float | None = None
    #: USD for all the tokens; None when the model has no price (0 for an extractor without an LLM)
    cost_usd: float | None = None
    #: the job's token budget (its ``max_tokens``, else ``LITMINER_MAX_TOKENS_PER_JOB``); 0: none
    budget: int = 0
    #: the estimated tokens exceed the budget
    over_budget: bool = False
    #: documents read before the budget is reached, one call after another (all of them without a budget): at
    #: least this many, as batches read their documents at once
    documents_within_budget: int = 0
