"""Cost estimates against the real run: for 3 schemas, the estimate's calls and tokens beside what the run sent.

Each schema runs on a fresh key prefix (so with no usage history): an estimate job (``JobService.estimate``:
schema preparation, search, then the estimate; no LLM call), then the real run, a reprocess of the estimate from
extraction (the same documents). The LLM is the stand-in ``tests.fixtures.llm.FakeLLM``, which counts a
request's prompt tokens as the characters of its messages / 4 (the JSON Schema of the reply is not counted) and a
reply's as its characters / 4; its screener keeps every document (as the estimate assumes), and its model
answers every schema with rows of realistic size (``realistic``): one row per call, a second on every third
document, each field with a value of its type and a quoted sentence, every third optional field null.

Output tokens are guessed from the schema when the deployment has no history (pass 1). Pass 2 estimates each
schema again with the usage the *other two* schemas' real runs recorded (``LlmUsage``), as a deployment that has
run other jobs of the model would: the same documents and calls, the completion tokens scaled by history.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
import uuid
from pathlib import Path

import msgspec

from bench.extract import follow
from contracts import (
    Dataset,
    Document,
    Estimate,
    FieldDefinition,
    GenerateRequest,
    PreparedSchema,
    ReprocessRequest,
)
from pipeline import estimate as estimating
from pipeline.extractors.base import ExtractorInfo
from pipeline.jobs import JobService
from pipeline.settings import Settings
from pipeline.sources.local import sample_corpus_path
from pipeline.store.extraction import LlmUsage
from pipeline.text import sentences
from pipeline.worker.runtime import WorkerRuntime
from services.embedded_redis import EmbeddedRedis
from services.worker import start_worker
from tests.fixtures.llm import Call, FakeLLM, Reply, rows_reply

MODEL = "bench-model"
THREADS = 4
TIMEOUT_S = 120.0
TARGET = 0.15
QUERY = "water treatment technologies used in specialty crop production"


def _fields(*specs: tuple[str, str, bool, str]) -> list[FieldDefinition]:
    return [FieldDefinition(name=n, type=t, required=r, description=d) for n, t, r, d in specs]  # type: ignore[arg-type]


#: (label, fields, full text in chunks)
SCHEMAS: list[tuple[str, list[FieldDefinition], bool]] = [
    (
        "2 text fields, abstracts",
        _fields(
            ("technology_name", "str", True, "Name of the technology or practice"),
            ("description", "str", False, "What it does"),
        ),
        False,
    ),
    (
        "7 fields of 6 types, abstracts",
        _fields(
            ("technology_name", "str", True, "Name of the technology or practice"),
            ("crops", "list[str]", False, "Crops it was used on"),
            ("pathogen_reduction_percent", "float", False, "Reduction of pathogens, in percent"),
            ("trial_year", "int", False, "Year of the field trial"),
            ("organic_certified", "bool", False, "Whether it is allowed in certified organic production"),
            ("published", "date", False, "Publication date"),
            ("cost_notes", "str", False, "What it costs to run"),
        ),
        False,
    ),
    (
        "4 fields with a dict, full text in chunks",
        _fields(
            ("technology_name", "str", True, "Name of the technology or practice"),
            ("operating_conditions", "dict", False, "Operating parameters and their values"),
            ("removal_efficiency", "float", False, "Share of contaminants removed"),
            ("limitations", "list[str]", False, "Known limitations"),
        ),
        True,
    ),
]


def realistic(call: Call) -> Reply:
    """A model's rows for any schema: each asked field with a value of its JSON Schema type and a quoted sentence."""
    document = call.document
    if not document:
        return rows_reply()
    lines = document.splitlines()
    title = lines[0].removeprefix("Title: ")
    text = " ".join(line.removeprefix("Abstract: ") for line in lines[1:])
    quotes = sentences(text) or [title]
    types = _value_types(call)
    rows = []
    for n in range(1 + (len(title) % 3 == 0)):
        quote = quotes[n % len(quotes)]
        values: dict[str, object] = {}
        evidence: dict[str, str | None] = {}
        for i, (name, kind) in enumerate(types.items()):
            value = title if i == 0 else None if i % 3 == 2 else _value(kind, quote)
            values[name] = value
            evidence[name] = (title if i == 0 else quote) if value is not None else None
        rows.append((values, evidence))
    return rows_reply(*rows)


def _value_types(call: Call) -> dict[str, str]:
    """Each asked field's JSON type, from the request's reply schema ("array:object" for a dict's pairs)."""
    schema = call.body["response_format"]["json_schema"]["schema"]  # type: ignore[index]
    properties = schema["properties"]["rows"]["items"]["properties"]["values"]["properties"]
    kinds: dict[str, str] = {}
    for name, spec in properties.items():
        kind = next(t for t in spec["type"] if t != "null")
        kinds[name] = f"array:{spec['items']['type']}" if kind == "array" else kind
    return kinds


def _value(kind: str, quote: str) -> object:
    words = re.findall(r"[A-Za-z]+", quote)
    return {
        "string": " ".join(words[:6]),
        "integer": 2019,
        "number": 87.5,
        "boolean": True,
        "array:string": words[:3],
        "array:integer": [3, 7],
        "array:number": [1.5, 2.5],
        "array:object": [{"key": "flow rate", "value": "0.2 m/h"}, {"key": "media", "value": "sand"}],
    }[kind]


def _full_text_corpus(folder: Path, count: int) -> str:
    """``count`` documents whose full texts are ~40 sample abstracts each (several chunks of 1,000 tokens)."""
    lines = Path(sample_corpus_path()).read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip() and not line.startswith("#")]
    path = folder / "full-text.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            record = records[i % len(records)]
            body = "\n\n".join(r["abstract"] for r in records[i : i + 40])
            out.write(json.dumps({**record, "id": f"full-{i}", "full_text": body}) + "\n")
    return str(path)


def finished(service: JobService, task_id: str) -> None:
    """Wait for the job to end; raise unless it completed."""
    last = follow(service, task_id)[-1]
    if last.status != "completed":
        raise RuntimeError(f"job {task_id} ended {last.status}: {last.message}")


def _measure(
    base: Settings, llm: FakeLLM, fields: list[FieldDefinition], rows: int
) -> tuple[Estimate, dict[str, int], LlmUsage, list[Document], PreparedSchema]:
    """Estimate then run one schema on a fresh prefix: the estimate, what the run spent (by the stand-in's
    count), the usage it recorded, and the documents and schema the estimate counted."""
    settings = msgspec.structs.replace(base, key_prefix=f"bench-estimate-{uuid.uuid4().hex[:8]}:")
    service = JobService(settings)
    runtime = WorkerRuntime(settings)
    worker = start_worker(runtime, threads=THREADS)
    try:
        job = service.estimate(GenerateRequest(user_query=QUERY, rows=rows, field_definitions=fields))
        finished(service, job.task_id)
        estimate = service.estimate_of(job.task_id)
        if llm.calls or llm.screenings:
            raise RuntimeError("the estimate called the LLM")
        real = service.reprocess(job.task_id, ReprocessRequest(from_stage="extraction"))
        finished(service, real.task_id)
        dataset = service.store.jobs.get_output(real.task_id, "dataset", Dataset)
        if dataset is None or dataset.stats.extraction is None:
            raise RuntimeError("the real run has no dataset")
        stats = dataset.stats.extraction
        actual = {
            "calls": len(llm.calls) + len(llm.screenings),
            "prompt_tokens": llm.prompt_tokens,
            "completion_tokens": llm.completion_tokens,
            "stage_prompt_tokens": stats.prompt_tokens,
            "stage_completion_tokens": stats.completion_tokens,
        }
        usage = service.store.extraction.usage(MODEL)
        documents = service.store.jobs.get_output(job.task_id, "documents", list[Document]) or []
        schema = service.store.jobs.get_output(job.task_id, "schema", PreparedSchema)
        assert schema is not None
    finally:
        worker.stop()
        time.sleep(1.1)  # the abort watcher's BLPOP (1 s) returns before close() shuts its connection
        runtime.close()
        service.close()
    return estimate, actual, usage, documents, schema


def _off(estimated: int, actual: int) -> float:
    return round(100 * (estimated - actual) / actual, 1) if actual else 0.0


def run(quick: bool) -> dict[str, object]:
    for name in ("", "dramatiq", "pipeline", "services"):
        logging.getLogger(name).setLevel(logging.WARNING)
    rows = 2 if quick else 10
    results: dict[str, dict[str, object]] = {}
    measured: dict[str, tuple[Estimate, dict[str, int], LlmUsage, list[Document], PreparedSchema, Settings]] = {}
    with EmbeddedRedis() as server, tempfile.TemporaryDirectory(prefix="litminer-bench-") as folder:
        base = Settings(
            redis_url=server.url,
            sources=("local",),
            index_dir=folder,
            openai_base_url="http://unused",
            openai_api_key="bench",
            llm_model=MODEL,
            screening_threshold=0.0,
        )
        for label, fields, full_text in SCHEMAS:
            with FakeLLM() as llm:
                llm.responder = realistic
                settings = msgspec.structs.replace(base, openai_base_url=llm.url)
                if full_text:
                    corpus = _full_text_corpus(Path(folder), 3 if quick else 10)
                    settings = msgspec.structs.replace(settings, corpus=corpus, llm_chunk_tokens=1000)
                estimate, actual, usage, documents, schema = _measure(settings, llm, fields, rows)
            measured[label] = (estimate, actual, usage, documents, schema, settings)

    for label, (estimate, actual, _, documents, schema, settings) in measured.items():
        others = [m[2] for other, m in measured.items() if other != label]
        history = LlmUsage(
            runs=sum(u.runs for u in others),
            calls=sum(u.calls for u in others),
            completion_tokens=sum(u.completion_tokens for u in others),
            guessed_tokens=sum(u.guessed_tokens for u in others),
        )
        request = GenerateRequest(user_query=QUERY, field_definitions=schema.fields)
        calls = estimating.plan_calls(request.user_query, request.criteria, schema, documents, settings)
        with_history = estimating.estimate(
            task_id=estimate.task_id,
            info=ExtractorInfo(name="openai", model=MODEL),
            documents=documents,
            batches=estimate.batches,
            calls=calls,
            usage=history,
            settings=settings,
            budget=0,
        )
        estimated_total = estimate.prompt_tokens + estimate.completion_tokens
        actual_total = actual["prompt_tokens"] + actual["completion_tokens"]
        history_total = with_history.prompt_tokens + with_history.completion_tokens
        results[label] = {
            "fields": len(schema.fields),
            "documents": estimate.documents,
            "calls_estimated": estimate.calls,
            "calls_actual": actual["calls"],
            "prompt_tokens_estimated": estimate.prompt_tokens,
            "prompt_tokens_actual": actual["prompt_tokens"],
            "prompt_off_percent": _off(estimate.prompt_tokens, actual["prompt_tokens"]),
            "completion_basis": estimate.completion_basis,
            "completion_tokens_estimated": estimate.completion_tokens,
            "completion_tokens_actual": actual["completion_tokens"],
            "completion_off_percent": _off(estimate.completion_tokens, actual["completion_tokens"]),
            "total_estimated": estimated_total,
            "total_actual": actual_total,
            "total_off_percent": _off(estimated_total, actual_total),
            "completion_tokens_with_history": with_history.completion_tokens,
            "history_runs": with_history.history_runs,
            "completion_with_history_off_percent": _off(with_history.completion_tokens, actual["completion_tokens"]),
            "total_with_history_off_percent": _off(history_total, actual_total),
        }

    print("\n## estimate: the estimate against the real run (stand-in LLM)\n")
    print(
        "| schema | documents | calls est / actual | input tokens est / actual (±%) | "
        "output tokens est / actual (±%), basis | total est / actual (±%) |"
    )
    print("|---|---|---|---|---|---|")
    for label, r in results.items():
        print(
            f"| {label} | {r['documents']} | {r['calls_estimated']} / {r['calls_actual']} | "
            f"{r['prompt_tokens_estimated']} / {r['prompt_tokens_actual']} ({r['prompt_off_percent']:+}%) | "
            f"{r['completion_tokens_estimated']} / {r['completion_tokens_actual']} "
            f"({r['completion_off_percent']:+}%), {r['completion_basis']} | "
            f"{r['total_estimated']} / {r['total_actual']} ({r['total_off_percent']:+}%) |"
        )
    print("\nPass 2, output tokens scaled by the usage the other two schemas' real runs recorded:\n")
    print("| schema | history runs | output tokens est / actual (±%) | total (±%) |")
    print("|---|---|---|---|")
    for label, r in results.items():
        print(
            f"| {label} | {r['history_runs']} | {r['completion_tokens_with_history']} / "
            f"{r['completion_tokens_actual']} ({r['completion_with_history_off_percent']:+}%) | "
            f"{r['total_with_history_off_percent']:+}% |"
        )
    worst = max(abs(float(r["total_off_percent"])) for r in results.values())  # type: ignore[arg-type]
    worst_input = max(abs(float(r["prompt_off_percent"])) for r in results.values())  # type: ignore[arg-type]
    print(
        f"\nTarget: tokens within ±{TARGET:.0%}. Worst: input {worst_input}%, total {worst}% (no history). Prompt "
        "tokens are counted from the words without tiktoken; the stand-in counts characters / 4."
    )
    return {"schemas": results, "rows": rows, "quick": quick, "target_percent": TARGET * 100}
