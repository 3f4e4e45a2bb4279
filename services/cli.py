"""The ``litminer`` command.

Exit codes: 0 done, 1 the job failed or was cancelled (or the task is unknown, or the API or Redis
unreachable), 2 bad usage (bad arguments, or a request the API refused with a 400), 3 the job completed
with no rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec
from rich.console import Console
from rich.table import Table

from contracts import STAGES, Estimate, TaskStatus
from pipeline.errors import InvalidRequest, JobConflict, JobNotFound, SettingsError, StoreUnavailable
from pipeline.settings import Settings
from pipeline.text import plural
from pipeline.version import VERSION
from services.client import DEFAULT_API_URL, ApiClient, ApiError, ExportFormat
from services.logs import configure_logging
from services.progress import citations, completed, generate, run_job, say

# The API, the worker and the pipeline (Litestar, Dramatiq, the OpenAI SDK) are imported by the commands that
# run them, so that the client commands (status, cancel, events, generate --api) start in well under a second.

_FORMATS: tuple[ExportFormat, ...] = ("csv", "json", "jsonl")
#: the Last-Event-ID before a client's first event: /sse/{client_id} replays what it keeps, then goes live
_HISTORY = "0"
_CTRL_C = (
    "Ctrl-C while following asks 'Cancel job <id>? [y/N]': y cancels the job and waits the moment it takes to "
    "stop, n or Enter keeps following, a second Ctrl-C stops waiting. When stdin is not a terminal, Ctrl-C "
    "cancels without asking. Exit codes: 0 completed, 1 failed or cancelled, 2 bad usage or a request the API "
    "refused, 3 completed with no rows."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="litminer", description="Mine cited datasets from the scholarly literature.")
    parser.add_argument("--version", action="version", version=f"litminer {VERSION}")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        help="logging level (default WARNING; INFO for api, worker and the log file of demo and generate --embedded)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    remote = argparse.ArgumentParser(add_help=False)
    _add_api_option(remote)
    _add_key_option(remote)

    api = commands.add_parser("api", help="run the HTTP API (uvicorn)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)

    worker = commands.add_parser("worker", help="run pipeline workers")
    worker.add_argument("--processes", type=int, default=1)
    worker.add_argument("--threads", type=int, default=8)

    generate_ = commands.add_parser(
        "generate",
        help="generate a dataset: submit, follow live, print the table, write the file",
        description="Submit a dataset generation job, follow it live, print the table and write the dataset. "
        + _CTRL_C,
    )
    generate_.add_argument("query", help="the research question")
    generate_.add_argument("--rows", type=int, default=10, help="rows wanted (default 10)")
    generate_.add_argument(
        "--fields", required=True, metavar="FILE|JSON", help="field definitions: a JSON file or an inline JSON array"
    )
    generate_.add_argument("--model-name", default="Dataset", help="name of the dataset's model (default Dataset)")
    generate_.add_argument(
        "--estimate",
        action="store_true",
        help="search, then print what extraction would cost (LLM calls, tokens, money) without calling the LLM",
    )
    _add_job_options(generate_, client_id=True)
    where = generate_.add_mutually_exclusive_group()
    _add_api_option(where)
    _add_key_option(generate_)
    where.add_argument(
        "--embedded",
        action="store_true",
        help="run Redis (unless REDIS_URL is set), a worker and the API in this process, like demo",
    )

    demo = commands.add_parser(
        "demo",
        help="run the example question end to end with an embedded Redis",
        description="generate --embedded with the example question (water treatment technologies used in "
        "specialty crop production), writing dataset.json and dataset.csv. " + _CTRL_C,
    )
    demo.add_argument("--query", default=None, help="research question (default: the example question)")
    demo.add_argument("--rows", type=int, default=5)
    demo.add_argument("--fields", default=None, help="field definitions: a JSON file or a JSON array")
    demo.add_argument("--model-name", default="TreatmentTechnologies")
    demo.add_argument("--out", type=Path, default=Path("."), help="folder for dataset.json and dataset.csv")
    demo.add_argument(
        "--sources",
        default="local",
        help="comma list: local (default), openalex, europepmc, crossref, arxiv, semanticscholar",
    )

    status = commands.add_parser("status", parents=[remote], help="show a job's status")
    status.add_argument("task_id")
    status.add_argument("--json", action="store_true", help="print the API's TaskStatus JSON instead")

    cancel = commands.add_parser("cancel", parents=[remote], help="cancel a queued or running job")
    cancel.add_argument("task_id")

    events = commands.add_parser(
        "events",
        parents=[remote],
        help="print a client's events as JSON lines: those the API still keeps, then live ones until Ctrl-C",
    )
    events.add_argument("client_id")
    events.add_argument("--count", type=int, default=None, metavar="N", help="stop after N events")
    events.add_argument(
        "--last-event-id",
        default=None,
        metavar="TASK_ID:SEQ",
        help="resume after this event (a line's task_id and seq) instead of starting with the oldest one kept",
    )

    reprocess = commands.add_parser(
        "reprocess",
        parents=[remote],
        help="run a finished job again from one stage as a new job, reusing earlier outputs; follow it",
        description="Reprocess a finished job from one stage as a new job, follow it live and write its dataset. "
        + _CTRL_C,
    )
    reprocess.add_argument("task_id")
    reprocess.add_argument("--from-stage", required=True, choices=["search", "extraction", "assembly"])
    reprocess.add_argument("--fields", default=None, help="new field definitions: a JSON file or a JSON array")
    reprocess.add_argument("--rows", type=int, default=None)
    _add_job_options(reprocess, client_id=True, sources_note=" (needs --from-stage search)")

    commands.add_parser(
        "mcp",
        parents=[remote],
        help="serve the Model Context Protocol on stdin/stdout for AI agents (talks to the API; logs on stderr)",
        description="An MCP server over stdio with the tools generate_dataset, get_status, get_dataset and "
        "cancel_task, which call the API at --api (or LITMINER_API_URL) with LITMINER_API_KEY.",
    )

    rerun = commands.add_parser(
        "rerun", help="operators: re-run a finished job in place from a stage (talks to Redis directly)"
    )
    rerun.add_argument("task_id")
    rerun.add_argument("--stage", required=True, choices=list(STAGES))
    return parser


def _add_api_option(parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
    parser.add_argument(
        "--api",
        default=None,
        metavar="URL",
        help=f"API URL (default: LITMINER_API_URL or {DEFAULT_API_URL})",
    )


def _add_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help="API key, sent as a Bearer token (default: LITMINER_API_KEY, the safer way: arguments show in ps)",
    )


def _add_job_options(parser: argparse.ArgumentParser, *, client_id: bool, sources_note: str = "") -> None:
    parser.add_argument(
        "--sources",
        default=None,
        help="comma list: openalex, europepmc, crossref, arxiv, semanticscholar, local" + sources_note,
    )
    parser.add_argument("--extractor", default=None, choices=["auto", "openai", "heuristic"])
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        metavar="N",
        help="the job's token budget: extraction stops once it spent N tokens (default LITMINER_MAX_TOKENS_PER_JOB)",
    )
    criteria = " (repeatable; needs --from-stage search)" if sources_note else " (repeatable)"
    parser.add_argument(
        "--include", action="append", default=None, metavar="TEXT", help="an inclusion criterion" + criteria
    )
    parser.add_argument(
        "--exclude", action="append", default=None, metavar="TEXT", help="an exclusion criterion" + criteria
    )
    if client_id:
        parser.add_argument("--client-id", default=None, help="client id the job's events are published under")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="PATH",
        help="file to write (default ./<model_name>-<task_id>.<format>; a folder gets that name inside it)",
    )
    parser.add_argument(
        "--format", default=None, choices=_FORMATS, help="csv, json or jsonl (default: --out's extension, else csv)"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``litminer`` console script."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (InvalidRequest, SettingsError) as exc:
        print(f"litminer: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"litminer: {exc}", file=sys.stderr)
        return 2 if exc.status == 400 else 1
    except (JobNotFound, JobConflict, StoreUnavailable) as exc:
        print(f"litminer: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("litminer: interrupted", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "api":
        from services.api.app import create_app  # noqa: PLC0415
        from services.api.server import serve  # noqa: PLC0415

        configure_logging(_service_level(args))
        settings = _with_redis(Settings.from_env())
        serve(create_app(settings), settings, host=args.host, port=args.port)
        return 0
    if args.command == "worker":
        from services.worker import run_workers  # noqa: PLC0415

        settings = _with_redis(Settings.from_env())
        return run_workers(settings, processes=args.processes, threads=args.threads, log_level=_service_level(args))
    configure_logging(args.log_level)
    commands = {
        "generate": _generate,
        "demo": _demo,
        "status": _status,
        "cancel": _cancel,
        "events": _events,
        "reprocess": _reprocess,
        "rerun": _rerun,
        "mcp": _mcp,
    }
    return commands[args.command](args)


def _demo(args: argparse.Namespace) -> int:
    from services.demo import SEED_QUERY, run_demo  # noqa: PLC0415

    fields = None if args.fields is None else _read_fields(args.fields)
    return _in_process(
        lambda: run_demo(
            query=args.query or SEED_QUERY,
            rows=args.rows,
            fields=fields,
            model_name=args.model_name,
            out_dir=args.out,
            sources=_split(args.sources),
            log_level=_service_level(args),
        )
    )


def _service_level(args: argparse.Namespace) -> str:
    """The log level of what runs services (api, worker, the embedded stack): INFO unless --log-level says."""
    return "INFO" if args.log_level == "WARNING" else str(args.log_level)


def _with_redis(settings: Settings) -> Settings:
    """``settings``, once their Redis answers; else ``StoreUnavailable`` says which variable to set."""
    from pipeline.store import require_redis  # noqa: PLC0415  (redis-py: only the commands that talk to Redis)

    require_redis(settings)
    return settings


def _in_process(run: Callable[[], int]) -> int:
    """``run()``, which uses an embedded stack: 1 when the stack cannot start."""
    from services.embedded import EmbeddedStackError  # noqa: PLC0415
    from services.embedded_redis import EmbeddedRedisError  # noqa: PLC0415

    try:
        return run()
    except (EmbeddedStackError, EmbeddedRedisError) as exc:
        print(f"litminer: {exc}", file=sys.stderr)
        return 1


def _generate(args: argparse.Namespace) -> int:
    body: dict[str, object] = {
        "user_query": args.query,
        "rows": args.rows,
        "model_name": args.model_name,
        "field_definitions": _read_fields(args.fields),
    }
    body |= _job_options(args)
    outputs = [(args.out, _format(args))]
    if args.estimate:
        if args.embedded:
            raise InvalidRequest("--estimate", "needs a running API (--api or LITMINER_API_URL), not --embedded")
        with ApiClient(args.api, args.api_key) as client:
            return _estimate(client, body, args.api)
    if args.embedded:
        from services.demo import run_embedded  # noqa: PLC0415

        return _in_process(lambda: run_embedded(body, outputs, log_level=_service_level(args)))
    with ApiClient(args.api, args.api_key) as client:
        return generate(client, body, Console(), outputs)


def _estimate(client: ApiClient, body: dict[str, object], api: str | None) -> int:
    """Submit an estimate, follow it, print what the job would cost and the command that runs it for real."""
    console = Console()
    accepted = client.estimate(body)
    task_id = accepted.task_id
    say(
        console,
        f"task {task_id}: estimating {body.get('user_query')!r} (follow: {client.base_url}/sse/tasks/{task_id})",
    )
    if not completed(client, task_id, console, what="estimate"):
        return 1
    print_estimate(console, client.task_estimate(task_id))
    where = f" --api {api}" if api else ""
    say(console, f"run it (reusing this search): litminer reprocess {task_id} --from-stage extraction{where}")
    return 0


def print_estimate(console: Console, estimate: Estimate) -> None:
    """The estimate as a small table: documents, LLM calls, input and output tokens, cost, budget."""
    table = Table(title=f"Estimate: {estimate.extractor} {estimate.model or ''}".rstrip(), title_justify="left")
    table.add_column("")
    table.add_column("estimate", justify="right")
    table.add_column("", style="dim")
    basis = {"history": f"from {plural(estimate.history_runs, 'earlier run')}", "guess": "guessed from the schema"}
    calls = f"{estimate.screening_calls} screening, {estimate.extraction_calls} extraction" if estimate.calls else ""
    cost = "no price: set LITMINER_LLM_PRICES" if estimate.cost_usd is None else ""
    budget = "over: " if estimate.over_budget else "within" if estimate.budget else ""
    if estimate.over_budget:
        budget += f"{estimate.documents_within_budget} of {estimate.documents} documents read"
    table.add_row("documents", f"{estimate.documents:,}", "")
    table.add_row("LLM calls", f"{estimate.calls:,}", calls)
    table.add_row("input tokens", f"{estimate.prompt_tokens:,}", "")
    table.add_row("output tokens", f"{estimate.completion_tokens:,}", basis.get(estimate.completion_basis, ""))
    table.add_row("cost", "" if estimate.cost_usd is None else f"${estimate.cost_usd:.4f}", cost)
    table.add_row("budget", f"{estimate.budget:,} tokens" if estimate.budget else "none", budget)
    console.print()
    console.print(table)


def _reprocess(args: argparse.Namespace) -> int:
    body: dict[str, object] = {"from_stage": args.from_stage}
    if args.fields is not None:
        body["field_definitions"] = _read_fields(args.fields)
    if args.rows is not None:
        body["rows"] = args.rows
    body |= _job_options(args)
    console = Console()
    with ApiClient(args.api, args.api_key) as client:
        accepted = client.reprocess(args.task_id, body)
        say(
            console,
            f"task {accepted.task_id}: reprocessing {args.task_id} from {args.from_stage} "
            f"(follow: {client.base_url}/sse/tasks/{accepted.task_id})",
        )
        return run_job(client, accepted.task_id, console, [(args.out, _format(args))])


def _job_options(args: argparse.Namespace) -> dict[str, object]:
    options: dict[str, object] = {}
    if args.sources is not None:
        options["sources"] = _split(args.sources)
    if args.extractor is not None:
        options["extractor"] = args.extractor
    if args.max_tokens is not None:
        options["max_tokens"] = args.max_tokens
    if args.include is not None or args.exclude is not None:
        options["criteria"] = [{"text": t, "kind": "include"} for t in args.include or []] + [
            {"text": t, "kind": "exclude"} for t in args.exclude or []
        ]
    if args.client_id is not None:
        options["client_id"] = args.client_id
    return options


def _format(args: argparse.Namespace) -> ExportFormat:
    if args.format is not None:
        chosen: ExportFormat = args.format
        return chosen
    suffix = args.out.suffix.lstrip(".").lower() if args.out is not None else ""
    return next((f for f in _FORMATS if f == suffix), "csv")


def _status(args: argparse.Namespace) -> int:
    with ApiClient(args.api, args.api_key) as client:
        status = client.status(args.task_id)
    if args.json:
        print(msgspec.json.encode(status).decode())
        return 0
    for name, value in _status_lines(status):
        print(f"{name:<9} {value}")
    return 0


def _status_lines(status: TaskStatus) -> list[tuple[str, str]]:
    lines = [
        ("task", status.task_id),
        ("client", status.client_id),
        ("status", status.status),
        ("stage", status.stage),
        ("progress", f"{status.progress}%"),
        ("message", status.message),
    ]
    if status.error:
        lines.append(("error", status.error))
    if status.parent_task_id:
        lines.append(("parent", f"{status.parent_task_id} (reprocessed from {status.from_stage})"))
    if status.result is not None:
        stats = status.result.stats
        lines.append(
            ("rows", f"{len(status.result.rows)} of {stats.requested_rows} requested, {citations(status.result)}")
        )
        if stats.shortfall:
            lines.append(("note", stats.shortfall))
    return lines


def _cancel(args: argparse.Namespace) -> int:
    with ApiClient(args.api, args.api_key) as client:
        status = client.cancel(args.task_id)
    print(f"task {status.task_id}: {status.status} ({status.message})")
    return 0 if status.status == "cancelled" else 1


def _events(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        print("litminer: --count must be at least 1", file=sys.stderr)
        return 2
    printed = 0
    with ApiClient(args.api, args.api_key) as client:
        print(f"following {client.base_url}/sse/{args.client_id} (Ctrl-C to stop)", file=sys.stderr)
        try:
            for event in client.follow_client(args.client_id, args.last_event_id or _HISTORY):
                sys.stdout.write(msgspec.json.encode(event).decode() + "\n")
                sys.stdout.flush()
                printed += 1
                if printed == args.count:
                    break
        except KeyboardInterrupt:
            pass
        except BrokenPipeError:  # the reader went away (| head): stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
    return 0


def _mcp(args: argparse.Namespace) -> int:
    from services.mcp import serve  # noqa: PLC0415  (the MCP SDK takes a while to import)

    serve(args.api, args.api_key)
    return 0


def _rerun(args: argparse.Namespace) -> int:
    from pipeline.jobs import JobService  # noqa: PLC0415

    jobs = JobService(_with_redis(Settings.from_env()))
    try:
        job = jobs.rerun(args.task_id, args.stage)
    finally:
        jobs.close()
    print(f"task {job.task_id}: re-running from {args.stage} (its later outputs will be overwritten)")
    return 0


def _read_fields(value: str) -> object:
    """Field definitions from a JSON file, or JSON given inline."""
    try:
        text = value if value.lstrip().startswith("[") else Path(value).read_text(encoding="utf-8")
        return json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidRequest("--fields", f"cannot read {value}: {exc}") from None


def _split(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


if __name__ == "__main__":
    sys.exit(main())
