"""Every source this installation can search, configured from the settings."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.settings import Settings
from pipeline.sources.arxiv import Arxiv
from pipeline.sources.base import Source
from pipeline.sources.crossref import Crossref
from pipeline.sources.europepmc import EuropePMC
from pipeline.sources.library_formats import LibraryBudget
from pipeline.sources.local import LocalLibrary, sample_corpus_path
from pipeline.sources.openalex import OpenAlex
from pipeline.sources.semantic_scholar import SemanticScholar


def available_sources(settings: Settings) -> dict[str, Source]:
    """Sources by name: the local library (the bundled sample without ``LITMINER_CORPUS``) and the online APIs."""
    corpus = corpus_path(settings)
    email = settings.contact_email
    sources: list[Source] = [
        LocalLibrary(corpus, Path(settings.index_dir), library_budget(settings)),
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


def reachable(settings: Settings, names: Iterable[str], timeout_s: float = 2.0) -> dict[str, bool]:
    """Whether each named source can be reached from here, found out within about ``timeout_s`` seconds.

    An online source is reachable when a TCP connection to its API's host (or to the HTTP proxy the environment
    names for it) opens in time; all are tried at once. The local library is reachable when its corpus exists.
    An unknown name is not reachable. This says nothing about whether the API answers well: it tells a machine
    that is offline (or a host that is blocked) from one that can search.
    """
    urls = _online_urls(settings)
    found: dict[str, bool] = {}
    probes: dict[str, threading.Thread] = {}
    for name in dict.fromkeys(names):
        if name == "local":
            found[name] = corpus_path(settings).exists()
        elif name not in urls:
            found[name] = False
        else:
            found[name] = False  # until its probe connects
            probe = threading.Thread(target=_probe, args=(urls[name], timeout_s, found, name), daemon=True)
            probe.start()
            probes[name] = probe
    deadline = time.monotonic() + timeout_s
    for probe in probes.values():  # a name lookup can outlast the connect timeout: never wait past the deadline
        probe.join(max(0.0, deadline - time.monotonic()))
    return dict(found)


def library_budget(settings: Settings) -> LibraryBudget:
    """What reading one file of the local library may cost (``LITMINER_LIBRARY_*``)."""
    return LibraryBudget(
        max_file_bytes=settings.library_max_file_mb * 1024 * 1024,
        max_pages=settings.library_max_pages,
        parse_timeout_s=settings.library_parse_timeout_s,
        max_text_chars=settings.library_max_text_chars,
    )


def corpus_path(settings: Settings) -> Path:
    """The local library's corpus: ``LITMINER_CORPUS``, else the bundled sample."""
    return Path(settings.corpus) if settings.corpus else sample_corpus_path()


def _online_urls(settings: Settings) -> dict[str, str]:
    """The API URL of each online source."""
    return {
        "openalex": settings.openalex_url,
        "europepmc": settings.europepmc_url,
        "crossref": settings.crossref_url,
        "arxiv": settings.arxiv_url,
        "semanticscholar": settings.semantic_scholar_url,
    }


def _probe(url: str, timeout_s: float, found: dict[str, bool], name: str) -> None:
    """Set ``found[name]`` when a TCP connection to ``url``'s host (or its proxy) opens within ``timeout_s``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxied.hostname or "", proxied.port or 80
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            found[name] = True
    except OSError:
        pass
