"""The sources the workers can search, each configured or not and reachable or not (``GET /api/v1/sources``)."""

from __future__ import annotations

import threading
import time

from litestar import Controller, get
from litestar.datastructures import State
from litestar.di import NamedDependency

from contracts import SourceList, SourceState
from pipeline.jobs import JobService
from pipeline.settings import Settings
from pipeline.sources.registry import corpus_path, reachable

#: how long one reachability probe is reused: the page asks on every load, a probe may take seconds
PROBE_TTL_S = 30.0
#: the longest one source's probe may take
PROBE_TIMEOUT_S = 2.0
#: where the app keeps its probe (``app.state``)
STATE_KEY = "source_probe"


def configuration_note(settings: Settings, name: str) -> str:
    """Why source ``name`` cannot be used as set up, in plain words; empty when it can."""
    if name == "openalex" and not settings.openalex_api_key:
        return "needs OPENALEX_API_KEY"
    if name == "local":
        corpus = corpus_path(settings)
        if not corpus.exists():
            return f"LITMINER_CORPUS {corpus} does not exist"
    return ""


class SourceProbe:
    """The sources of one API with their reachability, probed at most once per ``ttl_s`` (one probe at a time)."""

    def __init__(self, settings: Settings, names: list[str], *, ttl_s: float = PROBE_TTL_S) -> None:
        self.settings = settings
        self.names = names
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._last: SourceList | None = None

    def sources(self) -> SourceList:
        """The sources as last probed; probes again (blocking, up to ``PROBE_TIMEOUT_S``) once that is stale."""
        with self._lock:
            if self._last is None or time.time() - self._last.checked_at > self.ttl_s:
                self._last = self._probe()
            return self._last

    def _probe(self) -> SourceList:
        answers = reachable(self.settings, self.names, timeout_s=PROBE_TIMEOUT_S)
        defaults = set(self.settings.default_sources())
        states = []
        for name in self.names:
            note = configuration_note(self.settings, name)
            states.append(
                SourceState(
                    name=name,
                    configured=not note,
                    reachable=answers.get(name, False),
                    default=name in defaults,
                    note=note,
                )
            )
        return SourceList(sources=states, checked_at=time.time())


class SourcesController(Controller):
    """What the page's source checkboxes show."""

    path = "/api/v1"

    @get("/sources", operation_id="listSources", sync_to_thread=True)
    def sources(self, state: State, jobs: NamedDependency[JobService]) -> SourceList:
        """Every source the workers have: ``configured`` (set up to be used, else ``note`` says what is missing),
        ``reachable`` (answered a probe in the last 30 s) and ``default`` (searched when a request names none)."""
        probe: SourceProbe = state.setdefault(STATE_KEY, SourceProbe(jobs.settings, jobs.sources))
        return probe.sources()
