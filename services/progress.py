"""Following a job in the terminal: a live progress bar per stage, the rows as they are found, the final table,
what became of each row found, the files.

On a terminal, rich draws one bar per stage (its state and counters: documents found, documents read,
tokens, rows) under the latest message, and prints each row found above the bars. Elsewhere (a pipe, a file, a
test) every event is one plain line, ``[ 35%] extraction         processing Extracted 3/20 documents``, so the
output stays readable and greppable; its percentage is the highest so far (batches run in parallel and report
out of order). Once the dataset is in, the rows found that assembly merged into another or dropped are listed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, ProgressColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from contracts import GENERATED_SOURCE, STAGES, TERMINAL_STATUSES, Dataset, Event
from contracts.progress import (
    WARNINGS,
    AnyEventData,
    DocumentExtracted,
    ExtractionDone,
    ExtractionPlanned,
    JobCompleted,
    RowFound,
    SchemaPrepared,
    SearchDone,
    SearchPlanned,
    SourcePage,
    read_data,
)
from pipeline.text import plural
from services.client import ApiClient, ApiError, ExportFormat

_LABELS = {
    "schema_preparation": "schema",
    "search": "search",
    "extraction": "extraction",
    "assembly": "assembly",
}
#: the data of a stage's last event (it handed the job on)
_FINISHED_BY = (SchemaPrepared, SearchDone, ExtractionDone)
_STATE_STYLES = {
    "waiting": "dim",
    "running": "cyan",
    "retrying": "yellow",
    "done": "green",
    "reused": "dim green",
    "failed": "bold red",
    "cancelled": "yellow",
}
#: the exit code of a job that completed with no rows: nothing found answers the question
NO_ROWS = 3
_CONFIDENCE_STYLE = {"high": "green", "medium": "yellow", "low": "red"}
_CELL_WIDTH = 60
#: rows found listed at most per outcome (merged, dropped) after the table; the JSON says the rest
_OUTCOME_LINES = 20


class _Stage:
    """What the events said about one stage so far."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = "waiting"
        self.seen = False
        self.clock = "idle"  # its elapsed-time column: idle, running, stopped
        self.total: float | None = None
        self.completed = 0.0
        self.detail = ""
        self.found = 0  # search: documents found, page by page, until the stage's total arrives
        self.rows = 0  # extraction: candidate rows, document by document, until the stage's total arrives
        self.tokens = 0  # extraction: tokens spent by the job so far


class JobDisplay:
    """Shows a job's events: live bars on a terminal, one line per event elsewhere.

    Use as a context manager; ``update`` with each event, ``pause``/``resume`` around a prompt.
    """

    def __init__(self, console: Console, *, live: bool | None = None) -> None:
        self.console = console
        self.live = console.is_terminal if live is None else live
        self.stages = {name: _Stage(name) for name in STAGES}
        self.message = Text("waiting for the first event…", style="dim")
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.percent = 0  # the highest progress shown so far: it never goes back
        #: the rows found so far by candidate id (a redelivered batch sends its rows again: the last one counts)
        self.found: dict[str, RowFound] = {}
        if self.live:
            columns = (
                TextColumn("{task.description:<10}"),
                BarColumn(bar_width=30),
                TextColumn("{task.fields[state]}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[detail]}", markup=False),
            )
            self.progress = _StageProgress(self, columns, console)
            for name in STAGES:
                self.tasks[name] = self.progress.add_task(
                    _LABELS[name], total=None, start=False, state=_state_text("waiting"), detail=""
                )

    def __enter__(self) -> JobDisplay:
        self.resume()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.pause()

    def pause(self) -> None:
        """Stop drawing (before a prompt, at the end); the bars stay on screen as they are."""
        if self.progress is not None:
            self.progress.stop()

    def resume(self) -> None:
        if self.progress is not None:
            self.progress.start()

    def note(self, text: str, style: str = "") -> None:
        """A line printed above the bars (or among the event lines)."""
        self.console.print(Text(text, style=style), soft_wrap=True)

    def update(self, event: Event) -> None:
        """Take one event into the display."""
        self.percent = max(self.percent, event.progress)
        data = read_data(event.data)
        repeated = isinstance(data, RowFound) and self.found.get(data.candidate) == data
        if isinstance(data, RowFound):
            self.found[data.candidate] = data
        if not self.live:
            line = f"[{self.percent:3d}%] {event.stage:<18} {event.status:<10} {event.message}"
            say(self.console, line)
            return
        self.message = Text(f"{self.percent:3d}%  {event.message}")
        if isinstance(data, RowFound):
            if not repeated:  # a redelivered batch sends its rows again: shown once
                self.note(f"+ {event.message}", "green")
        elif event.status == "error":
            self.note(event.message, "bold red")
        elif event.status == "retrying" or _is_warning(data):
            self.note(f"{_LABELS.get(event.stage, event.stage)}: {event.message}", "yellow")
        if event.stage in self.stages:
            self._stage_event(self.stages[event.stage], event, data)
        elif event.stage == "done" and event.status == "completed":
            for stage in self.stages.values():
                self._finish(stage)
            if isinstance(data, JobCompleted):
                assembly = self.stages["assembly"]
                assembly.detail = f"{data.rows}/{plural(data.requested_rows, 'row')}"
                if data.shortfall:
                    assembly.detail += " (shortfall)"
        self._draw()

    def _stage_event(self, stage: _Stage, event: Event, data: AnyEventData | None) -> None:
        for earlier in STAGES[: STAGES.index(stage.name)]:  # a later stage runs: the earlier ones are over
            self._finish(self.stages[earlier])
        stage.seen = True
        if event.status in ("started", "processing"):
            stage.state = "running"
        elif event.status == "retrying":
            stage.state = "retrying"
        elif event.status == "error":
            stage.state = "failed"
        elif event.status == "cancelled":
            stage.state = "cancelled"
        if isinstance(data, SchemaPrepared):
            stage.detail = plural(data.fields, "field")
        elif stage.name == "search":
            _search_counters(stage, data)
        elif stage.name == "extraction":
            _extraction_counters(stage, data)
        if isinstance(data, _FINISHED_BY):
            self._finish(stage)

    def _finish(self, stage: _Stage) -> None:
        if stage.state in ("done", "reused"):
            return
        stage.state = "done" if stage.seen else "reused"
        stage.total = stage.total or 1
        stage.completed = stage.total

    def _draw(self) -> None:
        if self.progress is None:
            return
        for name, stage in self.stages.items():
            task = self.tasks[name]
            if stage.seen and stage.clock == "idle":
                self.progress.start_task(task)
                stage.clock = "running"
            self.progress.update(
                task,
                total=stage.total,
                completed=stage.completed,
                state=_state_text(stage.state),
                detail=stage.detail,
            )
            if stage.state in ("done", "reused", "failed", "cancelled") and stage.clock != "stopped":
                self.progress.stop_task(task)
                stage.clock = "stopped"

    def renderables(self) -> Iterable[RenderableType]:
        yield self.message


class _StageProgress(Progress):
    """The stage bars with the latest message under them."""

    def __init__(self, display: JobDisplay, columns: Sequence[ProgressColumn], console: Console) -> None:
        self.display = display  # read by get_renderables, which the constructor already calls
        super().__init__(*columns, console=console, refresh_per_second=8)

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        yield from self.display.renderables()


def _state_text(state: str) -> str:
    return f"[{_STATE_STYLES.get(state, '')}]{state:<9}[/]"


def _is_warning(data: AnyEventData | None) -> bool:
    return isinstance(data, WARNINGS) or (isinstance(data, DocumentExtracted) and data.warning is not None)


def _search_counters(stage: _Stage, data: AnyEventData | None) -> None:
    if isinstance(data, SearchPlanned):
        stage.total = data.target or None
    elif isinstance(data, SearchDone):  # the stage's last event: documents kept of those found
        stage.found = data.found
        stage.detail = f"kept {data.documents} of {stage.found} found"
    elif isinstance(data, SourcePage):
        stage.found += data.documents
        stage.completed = data.usable
        target = f"/{stage.total:g}" if stage.total else ""
        stage.detail = f"{stage.found} found, {stage.completed:g}{target} with text"


def _extraction_counters(stage: _Stage, data: AnyEventData | None) -> None:
    # batches run in parallel, so their events may arrive out of order: counters only go up
    if isinstance(data, ExtractionPlanned):
        stage.total = data.documents or None
    elif isinstance(data, DocumentExtracted):
        stage.total = data.documents or None
        stage.completed = max(stage.completed, data.documents_done)
        stage.rows += data.rows
        stage.tokens = max(stage.tokens, data.tokens)
    elif isinstance(data, ExtractionDone):  # the stage's last event
        stage.completed = stage.total or stage.completed
        stage.rows = data.candidate_rows
        stage.tokens = data.prompt_tokens + data.completion_tokens
    else:
        return
    parts = [f"{stage.completed:g}/{plural(int(stage.total), 'document')}" if stage.total else ""]
    parts += [plural(stage.tokens, "token") if stage.tokens else "", plural(stage.rows, "row") if stage.rows else ""]
    stage.detail = ", ".join(p for p in parts if p)


# -- following a job to its end ------------------------------------------------------------------------


def ask_cancel(console: Console, task_id: str) -> bool:
    """Ask on the terminal whether to cancel the job: y cancels, n or Enter does not.

    Off a terminal (stdin is not one: a pipe, a script, a service) nobody can answer, so it cancels without
    asking; so do the end of input (Ctrl-D) and a second Ctrl-C at the prompt.
    """
    if not _stdin_is_terminal():
        say(console, "interrupted (stdin is not a terminal, so nobody is asked)")
        return True
    say(console, f"Cancel job {task_id}? [y/N] ", end="")
    try:
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        answer = ""
    if not answer:  # Ctrl-D or a second Ctrl-C: the terminal did not end the line
        say(console, "")
        return True
    return answer.strip().lower() in ("y", "yes")


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError, OSError):  # replaced or closed
        return False


def watch_job(client: ApiClient, task_id: str, console: Console, display: JobDisplay | None = None) -> Event | None:
    """Show the task's events (on ``display``, else a new one) until its terminal event, which is returned.

    Ctrl-C asks whether to cancel the job (``ask_cancel``): yes cancels it and keeps following until it says
    cancelled, which takes a moment; no keeps following. Ctrl-C after cancelling stops following at once and
    returns None.
    """
    last: int | None = None
    final: Event | None = None
    cancelling = False
    interrupted = False
    display = display or JobDisplay(console)
    with display:
        while final is None:
            try:  # one try around everything, so a Ctrl-C anywhere (the prompt's aftermath too) is answered
                if interrupted:
                    interrupted = False
                    display.pause()
                    if cancelling:
                        say(console, f"stopped following job {task_id}, which is being cancelled")
                        return None
                    if ask_cancel(console, task_id):
                        cancelling = True
                        _cancel(client, task_id, console)
                    else:
                        say(console, f"still following job {task_id}")
                    display.resume()
                for event in client.follow_task(task_id, last_event_id=last):
                    display.update(event)
                    last = event.seq
                    if event.status in TERMINAL_STATUSES:
                        final = event
            except KeyboardInterrupt:
                interrupted = True
    return final


def _cancel(client: ApiClient, task_id: str, console: Console) -> None:
    say(console, f"cancelling job {task_id}")
    try:
        client.cancel(task_id)
    except ApiError as exc:
        if exc.status != 409:
            raise
        say(console, f"too late to cancel: {exc}")  # it finished: its last event follows


def generate(
    client: ApiClient, body: dict[str, object], console: Console, outputs: Sequence[tuple[Path | None, ExportFormat]]
) -> int:
    """Submit a generate request, then ``run_job`` it."""
    accepted = client.generate(body)
    say(
        console,
        f"task {accepted.task_id}: {body.get('user_query')!r}, {plural(_int(body.get('rows', 10)), 'row')} "
        f"(follow: {client.base_url}/sse/tasks/{accepted.task_id})",
    )
    return run_job(client, accepted.task_id, console, outputs)


def completed(
    client: ApiClient, task_id: str, console: Console, display: JobDisplay | None = None, *, what: str = "job"
) -> bool:
    """Follow the job to its end: True when it completed, else False with why on stderr."""
    final = watch_job(client, task_id, console, display)
    if final is None:
        return False
    if final.status != "completed":
        status = client.status(task_id)
        print(f"litminer: {what} {task_id} {final.status}: {status.error or final.message}", file=sys.stderr)
        return False
    return True


def run_job(
    client: ApiClient, task_id: str, console: Console, outputs: Sequence[tuple[Path | None, ExportFormat]]
) -> int:
    """Follow the job, then print its table and write its dataset in each format: 0 when it completed with
    rows, ``NO_ROWS`` (3) when it completed with none (nothing found answers the question), 1 otherwise.

    A ``None`` path is ``./<model_name>-<task_id>.<format>``; a folder gets that file name inside it.
    """
    display = JobDisplay(console)
    if not completed(client, task_id, console, display):
        return 1
    dataset = client.status(task_id).result
    if dataset is None:  # completed, so the dataset exists unless it expired meanwhile
        print(f"litminer: job {task_id} completed but its dataset is gone", file=sys.stderr)
        return 1
    print_dataset(console, dataset)
    print_outcomes(console, dataset, display.found)
    written = []
    for path, format in outputs:
        name = f"{dataset.model_name}-{task_id}.{format}"
        target = Path(name) if path is None else path / name if path.is_dir() else path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(client.dataset(task_id, format))
        written.append(str(target))
    say(console, f"wrote {' and '.join(written)} ({plural(len(dataset.rows), 'row')}, {citations(dataset)})")
    return 0 if dataset.rows else NO_ROWS


def print_dataset(console: Console, dataset: Dataset) -> None:
    """The rows as a table (schema columns and each row's confidence), the papers' flow, then the shortfall."""
    table = Table(title=f"{dataset.model_name}: {plural(len(dataset.rows), 'row')}", title_justify="left")
    names = [field.name for field in dataset.schema]
    for name in names:
        table.add_column(name, overflow="fold")
    table.add_column("confidence")
    for row in dataset.rows:
        cells = (Text(_cell(row.row.get(name))) for name in names)
        table.add_row(*cells, Text(row.confidence, style=_CONFIDENCE_STYLE[row.confidence]))
    console.print()
    console.print(table)
    flow = dataset.stats.flow
    if flow is not None:
        excluded = ", ".join(f"{count} {kind}" for kind, count in flow.excluded_by.items()) or "none"
        say(
            console,
            f"papers: {flow.found} found, {flow.duplicates_removed} duplicates removed, {flow.screened} screened, "
            f"{flow.excluded} excluded ({excluded}), {flow.not_reached} not reached, {flow.read} read, "
            f"{flow.cited} cited",
        )
    if dataset.stats.shortfall:
        say(console, f"note: {dataset.stats.shortfall}")


def row_outcomes(dataset: Dataset) -> dict[str, tuple[str, str]]:
    """What assembly made of each candidate row: id → (kept | merged | dropped, the row's id or why dropped).

    A row's first (best-ranked) candidate is the one kept; the others were merged into it.
    """
    outcomes: dict[str, tuple[str, str]] = {}
    for index, row in enumerate(dataset.rows, 1):
        row_id = row.row_id or f"row-{index}"
        for n, candidate in enumerate(row.candidates):
            outcomes[candidate] = ("merged" if n else "kept", row_id)
    return outcomes | {candidate: ("dropped", why) for candidate, why in dataset.stats.dropped_candidates.items()}


def print_outcomes(console: Console, dataset: Dataset, found: dict[str, RowFound]) -> None:
    """What became of the rows shown as they were found: how many were kept, and each one merged or dropped."""
    known = row_outcomes(dataset)
    if not found or not known:  # nothing shown, or a dataset that names no candidates (made before they existed)
        return
    outcomes = {candidate: known.get(candidate, ("dropped", "not in the dataset")) for candidate in found}
    counts = {kind: sum(k == kind for k, _ in outcomes.values()) for kind in ("kept", "merged", "dropped")}
    say(
        console,
        f"rows found while reading: {len(found)}: {counts['kept']} kept, {counts['merged']} merged into another, "
        f"{counts['dropped']} dropped",
    )
    for kind, joiner in (("merged", " into row "), ("dropped", ": ")):
        listed = [(candidate, detail) for candidate, (k, detail) in outcomes.items() if k == kind]
        for candidate, detail in listed[:_OUTCOME_LINES]:
            say(console, f"  {kind:<7} {_row_label(found[candidate])} ({candidate}){joiner}{detail}")
        if len(listed) > _OUTCOME_LINES:
            say(console, f"  … and {len(listed) - _OUTCOME_LINES} more {kind} (the dataset's JSON lists every one)")


def _row_label(row: RowFound) -> str:
    """A found row in a few words: its first stated values."""
    stated = [_cell(value) for value in row.values.values() if value is not None]
    return " · ".join(stated[:2]) or "(no values)"


def citations(dataset: Dataset) -> str:
    """How many quotes back the dataset's values (``12 citations``); a generated identifier's pseudo-citation
    (``GENERATED_SOURCE``) quotes no paper and is not counted."""
    return plural(sum(c.source_id != GENERATED_SOURCE for row in dataset.rows for c in row.citations), "citation")


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def say(console: Console, text: str, *, end: str = "\n") -> None:
    """Print text as it is: no markup, no highlighting, never wrapped (so it stays one greppable line)."""
    console.print(text, end=end, markup=False, highlight=False, soft_wrap=True)


def _cell(value: object) -> str:
    text = "" if value is None else value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= _CELL_WIDTH else text[: _CELL_WIDTH - 1] + "…"
