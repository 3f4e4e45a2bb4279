"""Stage 2: the user's question → ranked, de-duplicated documents from the chosen sources."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import zip_longest
from typing import TYPE_CHECKING

import msgspec

from contracts import Document
from pipeline.errors import PermanentError
from pipeline.sources.base import Source
from pipeline.text import normalise_key

if TYPE_CHECKING:
    from pipeline.runtime import Pipeline


def run(query: str, sources: Sequence[Source], limit: int) -> list[Document]:
    """Documents from every source, interleaved by rank, duplicates (same DOI or title) dropped."""
    per_source = [source.search(query, limit) for source in sources]
    documents: list[Document] = []
    seen: set[str] = set()
    for batch in zip_longest(*per_source):
        for document in batch:
            if document is None:
                continue
            identity = {normalise_key(document.title)} | ({document.doi.lower()} if document.doi else set())
            if identity & seen:
                continue
            seen |= identity
            documents.append(msgspec.structs.replace(document, rank=len(documents) + 1))
            if len(documents) == limit:
                return documents
    return documents


def process(pipeline: Pipeline, task_id: str) -> None:
    """Actor body: search, store the documents, hand off to extraction."""
    request = pipeline.job(task_id).request
    names = request.sources or [n for n in pipeline.settings.sources if n in pipeline.sources]
    unknown = [n for n in names if n not in pipeline.sources]
    if unknown or not names:
        raise PermanentError(f"no usable source among {names} (available: {', '.join(pipeline.sources)})")
    limit = min(request.rows * pipeline.settings.docs_per_row, pipeline.settings.max_documents)
    documents = run(request.user_query, [pipeline.sources[n] for n in names], limit)
    pipeline.store.put_output(task_id, "documents", documents)
    pipeline.hand_off(
        task_id,
        "extraction",
        progress=35,
        message=f"Found {len(documents)} documents",
        data={"documents": len(documents), "sources": ",".join(names)},
    )
