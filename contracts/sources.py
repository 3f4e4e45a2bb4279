"""What ``GET /api/v1/sources`` says about the sources the workers can search."""

from __future__ import annotations

from contracts.base import Record


class SourceState(Record, frozen=True, kw_only=True):
    """One source: whether it is set up to be used, whether it answered just now, whether jobs search it by default.

    ``note`` says in plain words why a source is not configured (``needs OPENALEX_API_KEY``), empty otherwise.
    """

    name: str
    configured: bool
    reachable: bool
    default: bool
    note: str = ""


class SourceList(Record, frozen=True, kw_only=True):
    """Reply to ``GET /api/v1/sources``: every source the workers have, and when they were last probed."""

    sources: list[SourceState]
    #: Unix time of the reachability probe the answer comes from (probes are reused for a short while)
    checked_at: float
