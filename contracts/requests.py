"""Requests accepted by the API."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from contracts.base import Inbound
from contracts.fields import FieldDefinition
from contracts.screening import Criterion

ReprocessStage = Literal["search", "extraction", "assembly"]

ExtractorName = Literal["auto", "openai", "heuristic"]

#: a job's token budget: at least one token
TokenBudget = Annotated[int, msgspec.Meta(ge=1)]


class GenerateRequest(Inbound, frozen=True, kw_only=True):
    """A dataset generation request: the question, the columns and how many rows."""

    user_query: str
    field_definitions: list[FieldDefinition]
    rows: int = 10
    model_name: str = "Dataset"
    client_id: str | None = None
    sources: list[str] | None = None
    extractor: ExtractorName | None = None
    #: inclusion and exclusion criteria every document is screened against (besides the question)
    criteria: list[Criterion] = []
    #: an http(s) URL that receives one signed POST when the job ends (docs/usage.md, "Webhooks")
    callback_url: str | None = None
    #: the job's token budget, instead of ``LITMINER_MAX_TOKENS_PER_JOB``: extraction stops once it is spent
    max_tokens: TokenBudget | None = None


class ReprocessRequest(Inbound, frozen=True, kw_only=True):
    """Run a finished job again from one stage, reusing the parent's outputs of the stages before it.

    Overrides left out keep the parent's values. ``field_definitions`` needs extraction again, ``extractor``
    too, and ``sources`` and ``criteria`` need search (which screens) again.
    """

    from_stage: ReprocessStage
    field_definitions: list[FieldDefinition] | None = None
    rows: int | None = None
    extractor: ExtractorName | None = None
    sources: list[str] | None = None
    criteria: list[Criterion] | None = None
    client_id: str | None = None
    callback_url: str | None = None
    #: keep the parent's reviewed cells and excluded rows (matched by row id); false starts unreviewed
    keep_review: bool = True
    #: a new token budget (the parent's otherwise)
    max_tokens: TokenBudget | None = None
