"""Every source this installation can search, configured from the settings."""

from __future__ import annotations

from pathlib import Path

from pipeline.settings import Settings
from pipeline.sources.arxiv import Arxiv
from pipeline.sources.base import Source
from pipeline.sources.crossref import Crossref
from pipeline.sources.europepmc import EuropePMC
from pipeline.sources.local import LocalLibrary, sample_corpus_path
from pipeline.sources.openalex import OpenAlex
from pipeline.sources.semantic_scholar import SemanticScholar


def available_sources(settings: Settings) -> dict[str, Source]:
    """Sources by name: the local library (the bundled sample without ``LITMINER_CORPUS``) and the online APIs."""
    corpus = Path(settings.corpus) if settings.corpus else sample_corpus_path()
    email = settings.contact_email
    sources: list[Source] = [
        LocalLibrary(corpus, Path(settings.index_dir)),
        OpenAlex(settings.openalex_url, api_key=settings.openalex_api_key, email=email),
        EuropePMC(settings.europepmc_url, email=email),
        Crossref(settings.crossref_url, email=email),
        Arxiv(settings.arxiv_url),
        SemanticScholar(settings.semantic_scholar_url, api_key=settings.semantic_scholar_api_key),
    ]
    return {source.name: source for source in sources}


def source_names(settings: Settings) -> list[str]:
    """The names of ``available_sources``."""
    return list(available_sources(settings))
