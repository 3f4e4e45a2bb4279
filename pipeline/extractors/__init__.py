"""Extractors: turn a document into rows that fit the schema (the heuristic one, and an OpenAI-compatible LLM)."""

from __future__ import annotations

from pipeline.extractors.base import Extractor
from pipeline.extractors.heuristic import HeuristicExtractor
from pipeline.settings import Settings


def extractor_names(settings: Settings) -> list[str]:
    """The extractors this installation has: the heuristic one, plus the LLM when an endpoint is configured."""
    return ["heuristic", "openai"] if settings.llm_configured else ["heuristic"]


def default_extractors(settings: Settings) -> dict[str, Extractor]:
    """The extractors named by ``extractor_names``, ready to use."""
    extractors: dict[str, Extractor] = {"heuristic": HeuristicExtractor()}
    if settings.llm_configured:
        # imported here: the openai package is about 30 MB of modules that a process without an LLM never needs
        from pipeline.extractors.llm import OpenAIExtractor  # noqa: PLC0415

        extractors["openai"] = OpenAIExtractor(settings)
    return extractors
