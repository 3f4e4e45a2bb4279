"""A zero-latency source and extractor for the pipeline benchmarks, plugged in through the normal interfaces.

The source answers every query at once with the same ``DOCUMENTS`` (one page); the extractor states one row
per document, quoting its title and first sentence, so grounding and assembly do their usual work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from contracts import Criterion, Document, ExtractedRow, FieldDefinition, GenerateRequest, PreparedSchema
from pipeline.extractors.base import Extraction, ExtractorInfo, Screening
from pipeline.sources.base import Page
from pipeline.sources.http import SourceHttp

NAME = "memory"
QUERY = "water treatment technologies used in specialty crop production"
FIELDS = [
    FieldDefinition(name="technology_name", type="str", description="Name of the technology or practice"),
    FieldDefinition(name="description", type="str", description="What it does", required=False),
]
_TECHNOLOGIES = ["Slow sand filtration", "UV disinfection", "Chlorine dioxide dosing", "Ozonation"]
DOCUMENTS = [
    Document(
        id=f"{NAME}:{i}",
        title=f"{name} of irrigation water in specialty crop production",
        abstract=(
            f"{name} is a water treatment technology that removes pathogens from irrigation water. Growers of "
            "specialty crops such as leafy greens adopted it widely."
        ),
        authors=["A. Author", "B. Author"],
        year=2020 + i,
        doi=f"10.1234/bench.{i}",
        source=NAME,
        rank=i,
    )
    for i, name in enumerate(_TECHNOLOGIES)
]


def request(client_id: str | None = None) -> GenerateRequest:
    """The benchmark's job: one row from the four documents, on the in-memory source and extractor."""
    return GenerateRequest(user_query=QUERY, rows=1, field_definitions=FIELDS, sources=[NAME], client_id=client_id)


class MemorySource:
    """Answers every query at once with ``DOCUMENTS``."""

    name = NAME

    async def pages(self, query: str, size: int, http: SourceHttp) -> AsyncIterator[Page]:
        yield Page(documents=DOCUMENTS[:size])


class MemoryExtractor:
    """One row per document: its title's technology as the name, its first sentence as the description."""

    name = NAME
    version = "1"
    cached = False

    def info(self) -> ExtractorInfo:
        return ExtractorInfo(name=self.name)

    async def extract(self, query: str, schema: PreparedSchema, document: Document) -> Extraction:
        technology = document.title.split(" of ")[0]
        sentence = document.abstract.split(". ")[0] + "."
        row = ExtractedRow(
            values={"technology_name": technology, "description": sentence},
            evidence={"technology_name": document.title, "description": sentence},
        )
        return Extraction(rows=[row])

    async def screen(self, query: str, criteria: list[Criterion], documents: list[Document]) -> Screening:
        return Screening()

    async def close(self) -> None:
        pass
