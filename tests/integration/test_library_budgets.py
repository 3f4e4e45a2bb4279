"""Jobs over a local library with a page bomb in it: the settings' budget stops it, and one job reports it."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec

from contracts import Event
from contracts.progress import SourceWarning, read_data
from pipeline.jobs import JobService
from pipeline.settings import Settings
from pipeline.sources.local import sample_corpus_path
from tests.conftest import follow
from tests.fixtures.requests import seed_request
from tests.unit.pipeline.sources.test_library_budgets import page_bomb


def library_warnings(events: list[Event]) -> list[str]:
    return [d.warning for d in map(read_data, (e.data for e in events)) if isinstance(d, SourceWarning)]


def test_a_page_bomb_is_reported_by_one_job_of_two_at_once_and_by_no_later_job(
    settings: Settings, make_jobs, run_worker, tmp_path: Path
) -> None:
    root = tmp_path / "library"
    root.mkdir()
    shutil.copy(sample_corpus_path(), root / "corpus.jsonl")
    page_bomb(root / "bomb.pdf", 8)  # about 15 s of pdfium without the budget
    library = msgspec.structs.replace(
        settings, corpus=str(root), index_dir=str(tmp_path / "index"), library_parse_timeout_s=2.0
    )
    run_worker(settings_=library, threads=2)
    jobs: JobService = make_jobs(settings_=library)

    # Two jobs at once: their searches refresh the new library together, and the bomb is read by one of them.
    first, second = (jobs.submit(seed_request()).task_id for _ in range(2))
    together = [follow(jobs, task_id, timeout=120) for task_id in (first, second)]
    assert [events[-1].status for events in together] == ["completed", "completed"]
    assert sorted(library_warnings(together[0]) + library_warnings(together[1])) == [
        "bomb.pdf: reading took longer than 2 s; skipped"
    ]

    later = follow(jobs, jobs.submit(seed_request()).task_id, timeout=120)
    assert later[-1].status == "completed" and library_warnings(later) == []
