"""What a stage may use: its job, the earlier stages' outputs, progress reports, hand-offs, and its tools.

Each stage module is a pure ``run(...)`` plus a thin ``process(ctx, task_id)`` that reads inputs through the
context, calls ``run`` and hands the job on through it. The worker wiring (``pipeline/worker/``) implements
this Protocol; stages never see Redis, Dramatiq or the other stages.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping, Sequence
from typing import Protocol, TypeVar

from contracts import Dataset, Estimate, JobRecord, Stage
from contracts.progress import EventData
from pipeline.extractors.base import Extractor
from pipeline.settings import Settings
from pipeline.sources.base import Source
from pipeline.sources.http import SourceHttp
from pipeline.store import ExtractionState, Inputs

T = TypeVar("T")


class StageContext(Protocol):
    """The one way a stage reaches the rest of litminer."""

    @property
    def settings(self) -> Settings: ...

    @property
    def sources(self) -> Mapping[str, Source]:
        """The sources this installation can search, by name."""
        ...

    @property
    def extractors(self) -> Mapping[str, Extractor]:
        """The extractors this installation has, by name."""
        ...

    @property
    def extraction(self) -> ExtractionState:
        """What an extraction run's batches share: counters, the document cache, the finish line."""
        ...

    def job(self, task_id: str) -> JobRecord:
        """The job a stage works on; stops the stage (``JobCancelled``) when it is gone."""
        ...

    def inputs(self, task_id: str, *names: str) -> Inputs:
        """Earlier stages' outputs, read together."""
        ...

    def report(
        self,
        task_id: str,
        *,
        message: str,
        progress: int | None = None,
        tokens: int | None = None,
        data: EventData | None = None,
        outputs: Mapping[str, object] | None = None,
        before: Sequence[tuple[str, EventData]] = (),
    ) -> None:
        """Progress inside a stage, with ``outputs`` to store and, ``before`` its event, more events (each a message
        and its data: rows found…) sent with it; stops the stage when the job was cancelled."""
        ...

    def hand_off(
        self,
        task_id: str,
        next_stage: Stage,
        *,
        progress: int,
        message: str,
        outputs: Mapping[str, object],
        data: EventData | None = None,
    ) -> None:
        """Finish a stage: store its ``outputs`` and send the job on to ``next_stage``."""
        ...

    def start_batches(
        self,
        task_id: str,
        run_id: str,
        count: int,
        *,
        progress: int,
        message: str,
        outputs: Mapping[str, object],
        data: EventData | None = None,
    ) -> None:
        """Store ``outputs``, then send ``count`` extraction batch messages of run ``run_id`` to any worker."""
        ...

    def complete(self, task_id: str, dataset: Dataset, *, message: str) -> None:
        """Store the dataset and mark the job completed."""
        ...

    def complete_estimate(self, task_id: str, estimate: Estimate, *, message: str) -> None:
        """Store an estimate job's ``Estimate`` and mark the job completed (it has no dataset)."""
        ...

    def run_async(self, coroutine: Coroutine[object, object, T]) -> T:
        """Run ``coroutine`` on the process's event loop (shared by every worker thread) and wait for it."""
        ...

    def source_http(self) -> SourceHttp:
        """The HTTP client sources share; only on the process's event loop (inside ``run_async``)."""
        ...
