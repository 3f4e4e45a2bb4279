"""Relevance benchmark on 8 real systematic reviews (``../shared/realdata/synergy``, read in place).

Each review's title is the question and its records (what the reviewers screened) the local library, read
as the local source reads a JSONL corpus. For each review: precision and recall of the documents the search
keeps against the reviewers' final inclusions, the same for plain Okapi BM25 over title + abstract at the same
number kept, rows produced by the offline extractor for 25 asked and rows citing an included record. Off-topic
controls: each question against two unrelated libraries (offsets +3 and +5 in ``reviews.json``), rows produced.

Runs the production code in process (search with screening, heuristic extraction, grounding, row checks,
assembly): quality, not the queue, is measured here.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

from contracts import Dataset, Document, FieldDefinition, GenerateRequest
from pipeline.checks import ground_and_check
from pipeline.extractors.heuristic import HeuristicExtractor
from pipeline.grounding import DEFAULT_THRESHOLD
from pipeline.screening import THRESHOLD, screen, topic
from pipeline.sources.http import SourceHttp
from pipeline.sources.local import LocalLibrary
from pipeline.stages import assembly, schema_preparation
from pipeline.stages.search import SearchResult, plan, search
from pipeline.text import keywords

ROWS = 25
DOCS_PER_ROW = 4
POOL = 3
FIELDS = [FieldDefinition(name="study_name", description="What the study investigates")]
CONTROL_OFFSETS = (3, 5)


def realdata() -> Path | None:
    """``../shared/realdata`` next to this checkout, if it is there."""
    for place in (Path(__file__).resolve().parents[2] / "shared" / "realdata", Path("/work/shared/realdata")):
        if place.is_dir():
            return place
    return None


class Review:
    """One review: its question, its library on disk, and the ids the reviewers included."""

    def __init__(self, entry: dict[str, object], folder: Path, synergy: Path) -> None:
        self.name = str(entry["name"])
        self.question = str(entry["question"])
        lines = gzip.decompress((synergy / str(entry["file"])).read_bytes()).decode().splitlines()
        self.records = [json.loads(line) for line in lines if line.strip()]
        self.included = {r["id"] for r in self.records if r["included"]}
        self.library = folder / f"{self.name}.jsonl"
        self.library.write_text("\n".join(lines) + "\n", encoding="utf-8")


def evaluate(question: str, review: Review, index: Path, threshold: float) -> dict[str, object]:
    """One question over one library: what was kept, what BM25 keeps at the same size, the rows made."""
    library = LocalLibrary(review.library, index)
    request = GenerateRequest(user_query=question, field_definitions=FIELDS, rows=ROWS, sources=["local"])
    subject = topic(question)
    target = ROWS * DOCS_PER_ROW
    result: SearchResult = asyncio.run(
        search(
            subject,
            plan(question, subject),
            [library],
            target,
            http=cast("SourceHttp", None),  # the local library asks no HTTP server
            pool_size=target * POOL,
            threshold=threshold,
        )
    )
    kept = [d.id for d in result.documents]
    rows = _rows(request, result.documents)
    cited = [{c.source_id for c in row.citations} for row in rows.rows]
    baseline = _bm25(review, question, len(kept))
    return {
        "kept": len(kept),
        "precision": _share(sum(i in review.included for i in kept), len(kept)),
        "recall": _share(sum(i in review.included for i in kept), len(review.included)),
        "bm25_precision": _share(sum(i in review.included for i in baseline), len(baseline)),
        "rows": len(rows.rows),
        "rows_citing_included": sum(bool(ids & review.included) for ids in cited),
        "excluded_by": result.flow.excluded_by,
    }


def _rows(request: GenerateRequest, documents: list[Document]) -> Dataset:
    schema = schema_preparation.run(request)
    subject = topic(request.user_query)
    extractor = HeuristicExtractor()
    candidates = []
    for document in documents:
        rows = extractor.rows(request.user_query, schema, document)
        candidates += ground_and_check(subject, schema, document, rows, threshold=DEFAULT_THRESHOLD)[0]
    return assembly.run("bench", request, schema, candidates, documents=len(documents))


def _bm25(review: Review, question: str, k: int) -> list[str]:
    """Plain Okapi BM25 (FTS5, title + abstract) with the question's keywords: the ``k`` best record ids."""
    if k == 0:
        return []
    with sqlite3.connect(":memory:") as db:
        db.execute("CREATE VIRTUAL TABLE docs USING fts5(id UNINDEXED, title, abstract)")
        db.executemany(
            "INSERT INTO docs VALUES (?, ?, ?)", [(r["id"], r["title"], r["abstract"] or "") for r in review.records]
        )
        match = " OR ".join(f'"{w}"' for w in keywords(question))
        found = db.execute("SELECT id FROM docs WHERE docs MATCH ? ORDER BY bm25(docs) LIMIT ?", (match, k)).fetchall()
    return [i for (i,) in found]


def _share(part: int, whole: int) -> float:
    return round(part / whole, 3) if whole else math.nan


def run(quick: bool, threshold: float = THRESHOLD, say: Callable[[str], None] = print) -> dict[str, object]:
    """Every review, then the off-topic controls; prints the tables, returns the numbers."""
    data = realdata()
    if data is None:
        say("../shared/realdata is not next to this checkout: nothing to measure")
        return {"skipped": "no realdata"}
    synergy = data / "synergy"
    entries = json.loads((synergy / "reviews.json").read_text())["reviews"]
    with tempfile.TemporaryDirectory() as folder:
        reviews = [Review(entry, Path(folder), synergy) for entry in entries]
        index = Path(folder) / "index"
        results = {r.name: evaluate(r.question, r, index, threshold) for r in reviews}
        controls = {
            f"{r.name} → {reviews[(i + offset) % len(reviews)].name}": cast(
                "int", evaluate(r.question, reviews[(i + offset) % len(reviews)], index, threshold)["rows"]
            )
            for i, r in enumerate(reviews)
            for offset in CONTROL_OFFSETS
        }
        speed = _screening_speed(reviews)
    say(f"\n## relevance: {len(reviews)} reviews, {ROWS} rows asked, screening threshold {threshold}")
    say("| review | kept | precision | BM25 precision | recall | rows | rows citing an included record |")
    say("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        say(
            f"| {name} | {r['kept']} | {r['precision']} | {r['bm25_precision']} | {r['recall']} | {r['rows']} | "
            f"{r['rows_citing_included']} |"
        )
    summary = _summary(results, controls)
    say("\n| off-topic control (question → library) | rows |\n|---|---|")
    for pair, rows in controls.items():
        say(f"| {pair} | {rows} |")
    say("\n" + " · ".join(f"{k}: {v}" for k, v in summary.items()))
    say(f"screening speed: every record of each library against its question, {speed} documents/s")
    return {"threshold": threshold, "reviews": results, "controls": controls, "summary": summary, "speed": speed}


def _screening_speed(reviews: list[Review]) -> int:
    """Documents screened per second (title + abstract), each library whole against its own question."""
    count, started = 0, time.perf_counter()
    for review in reviews:
        documents = [
            Document(id=r["id"], title=r["title"] or "", abstract=r["abstract"] or "", source="local")
            for r in review.records
        ]
        screen(documents, topic(review.question))
        count += len(documents)
    return round(count / (time.perf_counter() - started))


def _summary(results: dict[str, dict[str, object]], controls: dict[str, int]) -> dict[str, object]:
    precision = [cast("float", r["precision"]) for r in results.values()]
    bm25 = [cast("float", r["bm25_precision"]) for r in results.values()]
    rows = sum(cast("int", r["rows"]) for r in results.values())
    citing = sum(cast("int", r["rows_citing_included"]) for r in results.values())
    measured = [(p, b) for p, b in zip(precision, bm25, strict=True) if not math.isnan(p)]
    return {
        "reviews_above_bm25": sum(p > b for p, b in measured),
        "mean_precision": round(sum(p for p, _ in measured) / max(len(measured), 1), 3),
        "mean_bm25_precision": round(sum(b for _, b in measured) / max(len(measured), 1), 3),
        "rows": rows,
        "rows_asked": ROWS * len(results),
        "rows_citing_included_share": _share(citing, rows),
        "control_rows": sum(controls.values()),
    }
