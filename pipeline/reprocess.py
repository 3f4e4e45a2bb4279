"""Reprocessing: which stored outputs a stage reads, and the request a reprocessed job runs."""

from __future__ import annotations

import msgspec

from contracts import STAGE_ORDER, STAGES, GenerateRequest, JobRecord, ReprocessRequest, Stage
from pipeline.errors import InvalidRequest

#: stage → the outputs of earlier stages it reads (missing ones make it fail at once)
STAGE_INPUTS: dict[Stage, tuple[str, ...]] = {
    "schema_preparation": (),
    "search": ("schema",),
    "extraction": ("schema", "documents", "papers", "flow"),
    "assembly": ("schema", "documents", "papers", "flow", "candidates", "extraction_stats", "verdicts"),
}

#: what an override changes, and the earliest stage that must run again for it
_OVERRIDE_NEEDS: dict[str, Stage] = {
    "sources": "search",
    "criteria": "search",
    "field_definitions": "extraction",
    "extractor": "extraction",
}


def earlier_stages(stage: Stage) -> list[Stage]:
    """The stages before ``stage``, whose outputs a job started at ``stage`` reuses."""
    return [s for s in STAGES if STAGE_ORDER[s] < STAGE_ORDER[stage]]


def reprocessed_request(parent: JobRecord, change: ReprocessRequest) -> GenerateRequest:
    """The parent's request with the overrides applied; refuses overrides the reused outputs cannot honour.

    A changed schema or extractor invalidates the candidate rows (so extraction must run again) and changed
    sources invalidate the documents (so search must run again). An override equal to the parent's value
    changes nothing and is always accepted. Changed criteria need search again: it screens the documents.
    """
    request = parent.request
    overrides = {
        name: getattr(change, name)
        for name in ("field_definitions", "rows", "extractor", "sources", "criteria")
        if getattr(change, name) is not None and getattr(change, name) != getattr(request, name)
    }
    for name, needs in _OVERRIDE_NEEDS.items():
        if name in overrides and STAGE_ORDER[change.from_stage] > STAGE_ORDER[needs]:
            raise InvalidRequest(
                name,
                f"changing {name} needs the {needs} stage to run again, but from_stage is {change.from_stage!r}; "
                f"reprocess from {needs!r} (the earlier stages' outputs are still reused)",
            )
    return msgspec.structs.replace(request, **overrides)
