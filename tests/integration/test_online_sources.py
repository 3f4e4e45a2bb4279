"""Online sources against a real HTTP stand-in speaking each API's wire format; real Redis for cache and limits."""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest

from contracts import Document
from pipeline.errors import SourceError
from pipeline.screening import topic
from pipeline.settings import Settings
from pipeline.sources.base import FullText, FullTextSource, Page
from pipeline.sources.http import SourceHttp
from pipeline.sources.registry import available_sources
from pipeline.stages.search import SearchResult, search
from tests.fixtures.scholarly import Reply


def pages(settings: Settings, name: str, query: str, size: int) -> list[Page]:
    source = available_sources(settings)[name]

    async def run() -> list[Page]:
        async with SourceHttp.open(settings) as http:
            return [page async for page in source.pages(query, size, http)]

    return asyncio.run(run())


def documents(result: list[Page]) -> list[Document]:
    return [d for page in result for d in page.documents]


def test_openalex_rebuilds_inverted_index_abstracts_keeps_oa_pdf_and_pages_with_the_cursor(online_settings, scholarly):
    result = pages(online_settings, "openalex", "irrigation", 3)
    assert [len(p.documents) for p in result] == [3, 1] and [p.more for p in result] == [True, False]
    first = documents(result)[0]
    assert first.title == "Reverse osmosis for treating irrigation water in specialty crop production"
    assert first.abstract.startswith("Reverse osmosis (RO) removed 97% of dissolved salts")
    assert first.doi == "10.1000/ro.2021.1"  # OpenAlex writes https://doi.org/10.1000/RO.2021.1
    # the best open copy first, then the other open locations; the publisher's closed page gives none
    assert first.pdf_urls == ["https://oa.example/ro.pdf", "https://oa.example/ro-am.pdf"] and first.open_access is True
    assert (
        first.authors == ["Ana Ruiz", "Ben Osei"]
        and first.year == 2021
        and first.venue == "Agricultural Water Management"
    )
    assert [d.rank for d in documents(result)] == [1, 2, 3, 4]
    calls = scholarly.calls("/openalex/works")
    assert [c.params["cursor"] for c in calls] == ["*", "c3"]
    assert all(c.params["api_key"] == "test-openalex-key" and c.params["per-page"] == "3" for c in calls)
    assert "mailto:team@litminer.test" in calls[0].headers["User-Agent"]


def test_europepmc_strips_markup_and_fetches_jats_full_text_for_open_access(online_settings, scholarly):
    source = available_sources(online_settings)["europepmc"]
    assert isinstance(source, FullTextSource)
    found = documents(pages(online_settings, "europepmc", "irrigation", 10))
    ro = next(d for d in found if d.doi == "10.1000/ro.2021.1")
    assert ro.id == "PMC900001" and ro.open_access is True
    assert ro.title == "Reverse osmosis for treating irrigation water in specialty crop production"
    assert ro.abstract.startswith("Background\nReverse osmosis (RO) removed 97%")  # <h4>Background</h4>: a line
    assert ro.authors == ["Ana Ruiz", "Ben Osei"] and ro.year == 2021

    full = asyncio.run(_full_text(online_settings, source, ro))
    assert full is not None and full.origin.endswith("/PMC900001/fullTextXML") and full.pages == []
    assert [s.heading for s in full.sections] == ["Methods", "Results"]
    assert all(full.text[s.start :].startswith(s.heading) for s in full.sections)
    assert "operated at 12 bar" in full.text and "Someone 2001" not in full.text
    closed = next(d for d in found if not d.open_access)
    assert asyncio.run(_full_text(online_settings, source, closed)) is None


async def _full_text(settings: Settings, source: FullTextSource, document: Document) -> FullText | None:
    async with SourceHttp.open(settings) as http:
        return await source.full_text(document, http)


def test_crossref_uses_the_polite_pool_and_reads_jats_abstracts(online_settings, scholarly):
    found = documents(pages(online_settings, "crossref", "irrigation", 20))
    by_doi = {d.doi: d for d in found}
    wetland = by_doi["10.1000/cw.2019.7"]
    assert (
        wetland.abstract
        == "Constructed wetlands reduced nitrate in greenhouse runoff by 80% before reuse for irrigation."
    )
    assert wetland.authors == ["Chen Li"] and wetland.year == 2019 and wetland.venue == "Ecological Engineering"
    assert by_doi["10.1000/note.2017.9"].abstract == ""  # Crossref has no abstract for it
    call = scholarly.calls("/crossref/works")[0]
    assert call.params["mailto"] == "team@litminer.test" and call.params["cursor"] == "*"


def test_arxiv_reads_the_atom_feed_and_pages_with_start(online_settings, scholarly):
    found = documents(pages(online_settings, "arxiv", '"irrigation waters"', 2))
    assert len(found) == 3
    ozone = next(d for d in found if "Ozonation" in d.title)
    assert ozone.id == f"arXiv:{ozone.arxiv_id}" and ozone.arxiv_id == "2101.01003"  # one id for every version
    assert ozone.url and ozone.url.startswith(f"http://arxiv.org/abs/{ozone.arxiv_id}v")  # the version's page
    assert len(ozone.pdf_urls) == 1 and ozone.pdf_urls[0].startswith("http://arxiv.org/pdf/") and ozone.doi is None
    assert ozone.abstract == "Ozonation controlled Phytophthora in recycled nursery irrigation water."
    calls = scholarly.calls("/arxiv/query")
    assert [c.params["start"] for c in calls] == ["0", "2"]
    assert calls[0].params["search_query"] == 'all:"irrigation waters"'


def test_semantic_scholar_sends_the_key_header_and_follows_next(online_settings, scholarly):
    found = documents(pages(online_settings, "semanticscholar", "irrigation", 1))
    assert {d.doi for d in found} == {"10.1000/ro.2021.1", "10.1000/uv.2022.3", "10.1000/cl.2023.5"}
    calls = scholarly.calls("/s2/paper/search")
    assert [c.params["offset"] for c in calls] == ["0", "1", "2"]
    assert all(c.headers["x-api-key"] == "test-s2-key" for c in calls)


@pytest.mark.parametrize(
    ("reply", "calls"),
    [
        (Reply(status=429, headers={"Retry-After": "1"}), 2),
        (Reply(status=500), 2),
        (Reply(status=503, body=b"upstream busy"), 2),
        (Reply(delay_s=1.5), 2),  # longer than the 0.5 s timeout
    ],
    ids=["429-retry-after", "500", "503", "timeout"],
)
def test_transient_failures_are_retried(online_settings, scholarly, reply, calls):
    scholarly.script("/openalex/works", reply)
    found = documents(pages(online_settings, "openalex", "irrigation", 10))
    assert len(found) == 4
    assert len(scholarly.calls("/openalex/works")) == calls


@pytest.mark.parametrize(
    ("reply", "message", "calls"),
    [
        (Reply(body=b'{"meta": {"count": 1}, "results": [{"id": 7}]}'), "malformed response", 1),
        (Reply(body=b"<html>maintenance</html>"), "malformed response", 1),
        (Reply(status=403, body=b'{"error": "Invalid API key"}'), "HTTP 403", 1),
        (Reply(status=429, headers={"Retry-After": "3600"}), "asked to wait 3600 s", 1),
    ],
    ids=["wrong-shape", "not-json", "forbidden", "long-retry-after"],
)
def test_permanent_failures_fail_the_source_at_once(online_settings, scholarly, reply, message, calls):
    scholarly.script("/openalex/works", reply)
    with pytest.raises(SourceError, match=message) as failure:
        pages(online_settings, "openalex", "irrigation", 10)
    assert "test-openalex-key" not in str(failure.value)
    assert len(scholarly.calls("/openalex/works")) == calls


def test_failures_past_the_retries_fail_the_source(online_settings, scholarly):
    scholarly.script("/crossref/works", Reply(status=500), Reply(status=502), Reply(status=500))
    with pytest.raises(SourceError, match=r"crossref: HTTP 500 .* after 3 attempts"):
        pages(online_settings, "crossref", "irrigation", 10)


def test_empty_results_are_one_empty_page(online_settings):
    for name in ("openalex", "europepmc", "crossref", "arxiv", "semanticscholar"):
        assert pages(online_settings, name, "quantum chromodynamics", 10) == [Page(documents=[], more=False)], name


def test_answers_are_cached_in_redis(online_settings, scholarly):
    first = pages(online_settings, "openalex", "irrigation", 3)
    asked = len(scholarly.calls("/openalex/works"))
    again = pages(online_settings, "openalex", "irrigation", 3)
    assert again == first and len(scholarly.calls("/openalex/works")) == asked == 2
    pages(online_settings, "openalex", "ozone", 3)  # another question is asked again
    assert len(scholarly.calls("/openalex/works")) == 3


def test_rate_slots_and_concurrency_leases_are_shared_through_redis(online_settings):
    async def run() -> tuple[list[int], list[int]]:
        async with SourceHttp.open(online_settings) as http:
            waits = [await http.state.reserve("slow", interval_ms=3000, not_before_ms=0) for _ in range(3)]
            taken = [await http.state.take_lease("slow", f"l{i}", limit=2, lease_ms=60_000) for i in range(3)]
            return waits, [int(t) for t in taken]

    waits, taken = asyncio.run(run())
    assert waits[0] == 0 and 2500 < waits[1] <= 3000 and 5500 < waits[2] <= 6000
    assert taken == [1, 1, 0]


def run_search(settings: Settings, names: list[str], target: int, question: str) -> tuple[SearchResult, list[str]]:
    sources = [available_sources(settings)[n] for n in names]
    messages: list[str] = []

    async def run() -> SearchResult:
        async with SourceHttp.open(settings) as http:
            return await search(
                topic(question),
                [question],
                sources,
                target,
                http=http,
                threshold=0.0,  # the stand-in's few papers: see online_settings in conftest
                report=lambda message, data, done: messages.append(message),
            )

    return asyncio.run(run()), messages


def test_search_merges_the_same_paper_from_several_sources(online_settings, scholarly):
    result, messages = run_search(online_settings, ["openalex", "crossref", "arxiv"], 50, "irrigation water treatment")
    by_title = {d.title: d for d in result.documents}
    ro = by_title["Reverse osmosis for treating irrigation water in specialty crop production"]
    assert sorted(p.source for p in ro.provenance) == ["arxiv", "crossref", "openalex"]
    sand = next(d for d in result.documents if d.title.startswith("Slow sand filtration"))
    # Crossref has the DOI but no abstract; the arXiv preprint has the abstract, no DOI and a slightly different title
    assert sand.doi == "10.1000/ssf.2018.2" and sand.abstract.startswith("Slow sand filtration removed pathogens")
    assert sorted(p.source for p in sand.provenance) == ["arxiv", "crossref"]
    assert len({d.title for d in result.documents}) == len(result.documents)
    assert result.found == {"openalex": 4, "crossref": 4, "arxiv": 3} and result.duplicates == 4
    assert result.without_text == 1  # Crossref's costs note has neither abstract nor full text
    assert [d.rank for d in result.documents] == list(range(1, len(result.documents) + 1))
    assert any(m.startswith("openalex: 4 documents") for m in messages)


def test_a_failing_source_is_reported_and_the_others_carry_on(online_settings, scholarly):
    scholarly.script("/crossref/works", *[Reply(status=500)] * 3)
    result, messages = run_search(online_settings, ["openalex", "crossref"], 50, "irrigation water")
    assert "crossref" in result.failures and result.found["openalex"] == 4 and result.documents
    assert any(
        m.startswith("Source crossref failed: crossref: HTTP 500") and "continuing with openalex" in m for m in messages
    )


def test_every_source_failing_fails_the_search_with_each_reason(online_settings, scholarly):
    scholarly.script("/crossref/works", *[Reply(status=500)] * 3)
    scholarly.script("/openalex/works", Reply(body=b"{}"))
    with pytest.raises(SourceError) as failure:
        run_search(online_settings, ["openalex", "crossref"], 50, "irrigation water")
    assert "openalex: malformed response" in str(failure.value) and "crossref: HTTP 500" in str(failure.value)


def test_search_stops_fetching_once_it_has_enough(online_settings, scholarly):
    result, _ = run_search(online_settings, ["openalex"], 2, "irrigation")
    assert len(result.documents) == 2
    assert len(scholarly.calls("/openalex/works")) == 1  # the second page was never asked for


def test_full_text_is_added_for_open_access_europepmc_documents(online_settings):
    result, messages = run_search(online_settings, ["europepmc"], 10, "reverse osmosis irrigation")
    ro = next(d for d in result.documents if d.doi == "10.1000/ro.2021.1")
    assert ro.full_text and "12 bar" in ro.full_text
    assert "Full text for 1 of" in " ".join(messages)


def test_documents_survive_a_round_trip_through_json(online_settings):
    result, _ = run_search(online_settings, ["openalex", "arxiv"], 10, "irrigation water")
    assert msgspec.json.decode(msgspec.json.encode(result.documents), type=list[Document]) == result.documents
    assert json.loads(msgspec.json.encode(result.documents))[0]["provenance"]
