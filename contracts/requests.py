"""Requests accepted by the API."""

from __future__ import annotations

from typing import Literal

from contracts.base import Inbound
from contracts.fields import FieldDefinition

ExtractorName = Literal["auto", "openai", "heuristic"]


class GenerateRequest(Inbound, frozen=True, kw_only=True):
    """A dataset generation request: the question, the columns and how many rows."""

    user_query: str
    field_definitions: list[FieldDefinition]
    rows: int = 10
    model_name: str = "Dataset"
    client_id: str | None = None
    sources: list[str] | None = None
    extractor: ExtractorName | None = None
