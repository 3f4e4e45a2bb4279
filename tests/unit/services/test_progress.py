"""services.progress: the plain event lines, counts in words, and the citations a dataset's values cite."""

from __future__ import annotations

import io
import re

from rich.console import Console

from contracts import (
    GENERATED_SOURCE,
    Citation,
    CitationMetadata,
    Dataset,
    DatasetRow,
    DatasetStats,
    Event,
    FieldDefinition,
)
from pipeline.text import plural
from services.progress import JobDisplay, citations


def _event(seq: int, progress: int, message: str) -> Event:
    return Event(
        task_id="t",
        client_id="c",
        seq=seq,
        status="processing",
        stage="extraction",
        message=message,
        progress=progress,
        total=100,
        timestamp=0.0,
    )


def test_plain_lines_never_show_the_progress_going_back():
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=False, width=200)
    # extraction batches run in parallel: their events arrive out of order
    reported = [35, 43, 46, 43, 51, 48, 90]
    with JobDisplay(console) as display:
        assert not display.live
        for seq, progress in enumerate(reported, start=1):
            display.update(_event(seq, progress, f"event {seq}"))
    shown = [int(p) for p in re.findall(r"^\[\s*(\d+)%\]", screen.getvalue(), re.MULTILINE)]
    assert shown == [35, 43, 46, 46, 51, 51, 90]
    assert "event 4" in screen.getvalue()  # every event still gets its line


def test_plural_uses_the_singular_for_one():
    assert [plural(n, "field") for n in (0, 1, 2)] == ["0 fields", "1 field", "2 fields"]
    assert plural(1234, "token") == "1,234 tokens"


def _citation(source_id: str) -> Citation:
    return Citation(source_id=source_id, field="name", text_span="quoted", metadata=CitationMetadata(title="A paper"))


def _dataset(*rows: list[Citation]) -> Dataset:
    return Dataset(
        task_id="t",
        model_name="Treatments",
        query="q",
        schema=[FieldDefinition(name="id"), FieldDefinition(name="name")],
        rows=[DatasetRow(row={"name": "Chlorination"}, citations=cited) for cited in rows],
        stats=DatasetStats(requested_rows=len(rows), returned_rows=len(rows)),
    )


def test_citations_leave_out_the_generated_identifiers_pseudo_citation():
    generated = _citation(GENERATED_SOURCE)  # the identifier made from the key value: it quotes no paper
    assert citations(_dataset([generated, _citation("paper-1"), _citation("paper-2")], [generated])) == "2 citations"
    assert citations(_dataset([generated, _citation("paper-1")])) == "1 citation"
    assert citations(_dataset()) == "0 citations"
