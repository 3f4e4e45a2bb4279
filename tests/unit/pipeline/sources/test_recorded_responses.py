"""The search sources' own parsing on answers the real services gave (``../shared/realdata/responses``, in place).

Every recorded answer of OpenAlex, Crossref, Semantic Scholar and arXiv goes through the function the source's
``pages()`` parses its answers with; each document is checked against its raw record, read here independently
with ``json`` and ``xml.etree``. A record without a title is no document, in every source. Odd cases recorded:

- OpenAlex: the answers are page-based (no ``next_cursor``). An arXiv preprint carries a DataCite DOI
  (``10.48550/arxiv.2304.05376``); its best open location has no ``pdf_url`` while another arXiv location of the
  same work has one (ChemCrow), or none has one at all (PaperQA: open, green, yet no PDF link).
- Crossref: the ``works_title_*`` answers are ordinary work-lists of one item (``rows=1``), not single-work
  answers; ``issued`` may be ``[[null]]`` (no year); ``container-title`` holds HTML entities ("Big Data &amp;
  Society"); many records offer only ``similarity-checking`` or ``syndication`` links, which are no text-mining
  copies; no recorded record is retracted (no ``updated-by``).
- Semantic Scholar: ``paper_search_turing_openaccesspdf.json`` and ``paper_search_turing_venue.json`` asked for
  ``fields=openAccessPdf`` and ``fields=venue`` only: no record has a title, so neither gives a document.
  ``publicationTypes`` come in no fixed order, and ``openAccessPdf`` may say ``CLOSED`` next to an arXiv URL.
- arXiv: ``search_query_au_del_maestro.xml`` is the older feed format (namespaces declared on each element) and
  holds old-style identifiers (``cond-mat/0412498v1``); every entry id carries a version.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from contracts import Document
from pipeline.sources import arxiv, crossref, openalex, semantic_scholar
from tests.fixtures.realdata import realdata

REALDATA = realdata()
RESPONSES = REALDATA / "responses"

#: an arXiv identifier without its version, new style or old style
ARXIV_ID = re.compile(r"\d{4}\.\d{4,5}|[a-z][a-z-]*(?:\.[A-Z]{2})?/\d{7}")
NS = {
    "atom": "http://www.w3.org/2005/Atom",
    "arxiv": "http://arxiv.org/schemas/atom",
    "opensearch": "http://a9.com/-/spec/opensearch/1.1/",
}
TEXT_MINING_TYPES = {"application/pdf", "application/xml", "text/xml", "unspecified"}


def recorded(source: str, pattern: str) -> list[Path]:
    return sorted((RESPONSES / source).glob(pattern))


def named(path: Path) -> str:
    return path.name


def without_tags(text: str | None) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", text or "").split())


def doi_of(raw: str | None) -> str | None:
    return raw.removeprefix("https://doi.org/").lower() if raw else None


def assert_unversioned(document: Document) -> None:
    if document.arxiv_id is not None:
        assert ARXIV_ID.fullmatch(document.arxiv_id), document.arxiv_id


def test_every_source_has_recorded_answers() -> None:
    for source, pattern in [("openalex", "*.json"), ("crossref", "*.json"), ("semantic_scholar", "*.json")]:
        assert recorded(source, pattern), source
    assert recorded("arxiv", "*.xml")


@pytest.mark.parametrize("path", recorded("openalex", "*.json"), ids=named)
def test_openalex_answers(path: Path) -> None:
    works: list[dict[str, Any]] = json.loads(path.read_bytes())["results"]
    answer = openalex.parse_answer(path.read_bytes(), start=10, query="q")
    titled = [w for w in works if w.get("title") or w.get("display_name")]
    assert answer.works == len(works) and answer.next_cursor is None
    assert [d.id for d in answer.documents] == [w["id"].rsplit("/", 1)[-1] for w in titled]
    for document, work in zip(answer.documents, titled, strict=True):
        best, primary = work["best_oa_location"] or {}, work["primary_location"] or {}
        assert document.rank == 10 + works.index(work) + 1 and document.provenance[0].query == "q"
        assert len(document.authors) == sum(bool(a["author"].get("display_name")) for a in work["authorships"])
        assert document.doi == doi_of(work["doi"])
        assert document.year == work["publication_year"]
        assert bool(document.abstract) == bool(work["abstract_inverted_index"])
        assert document.cited_by == work["cited_by_count"]
        assert document.license == (best.get("license") or primary.get("license"))
        assert document.publication_type == work["type"]
        assert document.retracted is work["is_retracted"]
        assert document.oa_status == work["open_access"]["oa_status"]
        assert document.open_access is work["open_access"]["is_oa"]
        offered = {best.get("pdf_url"), *(place["pdf_url"] for place in work["locations"] if place["is_oa"])} - {None}
        assert set(document.pdf_urls) == offered and len(document.pdf_urls) == len(offered)
        if best.get("pdf_url"):
            assert document.pdf_urls[0] == best["pdf_url"]
        on_arxiv = [p for p in work["locations"] if "arxiv.org/" in (p["landing_page_url"] or "")]
        assert (document.arxiv_id is not None) == bool(on_arxiv or "10.48550/arxiv." in (document.doi or ""))
        if document.doi and document.doi.startswith("10.48550/arxiv."):
            assert document.arxiv_id == document.doi.removeprefix("10.48550/arxiv.")
        assert_unversioned(document)


def test_openalex_reads_an_arxiv_copy_beyond_the_best_location() -> None:
    answer = openalex.parse_answer((RESPONSES / "openalex/works_title_search_chemistry_tools.json").read_bytes())
    published, preprint = answer.documents
    assert published.publication_type == "article" and published.oa_status == "hybrid" and published.license == "cc-by"
    assert published.pdf_urls == ["https://www.nature.com/articles/s42256-024-00832-8.pdf"]
    assert published.arxiv_id is None and published.venue == "Nature Machine Intelligence"
    assert preprint.publication_type == "preprint" and preprint.arxiv_id == "2304.05376"
    assert preprint.pdf_urls == ["http://arxiv.org/pdf/2304.05376"]  # not the best location's: it has none


@pytest.mark.parametrize("path", recorded("crossref", "*.json"), ids=named)
def test_crossref_answers(path: Path) -> None:
    body = json.loads(path.read_bytes())
    assert body["message-type"] == "work-list"
    items: list[dict[str, Any]] = body["message"]["items"]
    answer = crossref.parse_answer(path.read_bytes())
    titled = [i for i in items if without_tags((i.get("title") or [""])[0])]
    assert answer.items == len(items) and answer.next_cursor == body["message"].get("next-cursor")
    assert [d.id for d in answer.documents] == [i["DOI"].lower() for i in titled]
    for document, item in zip(answer.documents, titled, strict=True):
        named_authors = [a for a in item.get("author", []) if a.get("name") or a.get("given") or a.get("family")]
        assert len(document.authors) == len(named_authors)
        assert document.doi == item["DOI"].lower()
        issued = (item.get("issued") or {}).get("date-parts") or [[None]]
        assert document.year == issued[0][0]
        text = re.sub(r"^(abstract|summary)\b", "", without_tags(item.get("abstract")), flags=re.I)
        assert bool(document.abstract) == bool(text.strip())
        assert "\n" not in document.title and not re.match(r"(abstract|summary)\n", document.abstract, re.I)
        assert document.cited_by == item["is-referenced-by-count"]
        licences = item.get("license", [])
        vor = [x for x in licences if x["content-version"] == "vor"]
        assert document.license == ((vor or licences)[0]["URL"] if licences else None)
        assert document.publication_type == item["type"]
        assert document.retracted is any(u.get("type") == "retraction" for u in item.get("updated-by", []))
        mining = [
            link["URL"]
            for link in item.get("link", [])
            if link["intended-application"] == "text-mining" and link["content-type"] in TEXT_MINING_TYPES
        ]
        assert document.pdf_urls == list(dict.fromkeys(mining))
        assert "&amp;" not in (document.venue or "")
        assert document.arxiv_id is None


def test_crossref_refuses_an_answer_that_is_not_a_work_list() -> None:
    single = {"status": "ok", "message-type": "work", "message": {"DOI": "10.1000/x", "title": ["One work"]}}
    with pytest.raises(ValueError, match="work-list"):
        crossref.parse_answer(json.dumps(single).encode())


@pytest.mark.parametrize("path", recorded("semantic_scholar", "*.json"), ids=named)
def test_semantic_scholar_answers(path: Path) -> None:
    body = json.loads(path.read_bytes())
    papers: list[dict[str, Any]] = body["data"]
    answer = semantic_scholar.parse_answer(path.read_bytes(), start=100)
    titled = [p for p in papers if (p.get("title") or "").strip()]
    assert answer.papers == len(papers) and answer.next == body.get("next")
    assert [d.id for d in answer.documents] == [p["paperId"] for p in titled]
    if "title" not in papers[0]:  # an answer to a request for other fields only
        assert answer.documents == [] and answer.papers == 100
    for document, paper in zip(answer.documents, titled, strict=True):
        ids, pdf = paper.get("externalIds") or {}, paper.get("openAccessPdf") or {}
        types = paper.get("publicationTypes") or []
        assert document.rank == 100 + papers.index(paper) + 1
        assert len(document.authors) == sum(bool(a.get("name")) for a in paper["authors"])
        assert document.doi == doi_of(ids.get("DOI"))
        assert document.year == paper["year"]
        assert bool(document.abstract) == bool((paper["abstract"] or "").strip())
        assert document.cited_by == paper["citationCount"]
        assert document.license == pdf.get("license")
        assert document.oa_status == (pdf["status"].lower() if pdf.get("status") else None)
        assert document.open_access is paper["isOpenAccess"]
        assert (document.publication_type in types) if types else document.publication_type is None
        if len(set(types)) == 1:
            assert document.publication_type == types[0]
        assert document.retracted is False
        assert document.pdf_urls == ([pdf["url"]] if pdf.get("url") else [])
        assert document.arxiv_id == ids.get("ArXiv")
        assert document.venue == (paper["venue"] or (paper["journal"] or {}).get("name") or None)
        assert_unversioned(document)


@pytest.mark.parametrize("path", recorded("arxiv", "*.xml"), ids=named)
def test_arxiv_answers(path: Path) -> None:
    root = ElementTree.fromstring(path.read_bytes())
    entries = root.findall("atom:entry", NS)
    feed = arxiv.parse_feed(path.read_bytes())
    titled = [e for e in entries if (e.findtext("atom:title", "", NS) or "").strip()]
    assert feed.entries == len(entries) and feed.total == int(root.findtext("opensearch:totalResults", "0", NS))
    versioned = [e.findtext("atom:id", "", NS).rsplit("/abs/", 1)[1] for e in titled]
    assert all(re.search(r"v\d+$", v) for v in versioned)
    assert [d.id for d in feed.documents] == [f"arXiv:{re.sub(r'v[0-9]+$', '', v)}" for v in versioned]
    for document, entry in zip(feed.documents, titled, strict=True):
        assert document.id == f"arXiv:{document.arxiv_id}"
        assert len(document.authors) == len(entry.findall("atom:author", NS))
        assert document.doi == ((entry.findtext("arxiv:doi", "", NS) or "").lower() or None)
        assert document.year == int(entry.findtext("atom:published", "", NS)[:4])
        assert bool(document.abstract) == bool((entry.findtext("atom:summary", "", NS) or "").strip())
        assert document.cited_by is None and document.retracted is False
        assert document.license == (entry.findtext("arxiv:license", "", NS) or None)
        assert document.publication_type == "preprint"
        pdfs = [link.get("href") for link in entry.findall("atom:link", NS) if link.get("title") == "pdf"]
        assert document.pdf_urls == pdfs and len(pdfs) == 1
        assert_unversioned(document)


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("http://arxiv.org/abs/1111.2011v2", "1111.2011"),
        ("https://arxiv.org/abs/2304.02623v1", "2304.02623"),
        ("math/0211159v1", "math/0211159"),
        ("http://arxiv.org/abs/cond-mat/0412498v1", "cond-mat/0412498"),
        ("http://arxiv.org/pdf/2304.05376", "2304.05376"),
        ("https://doi.org/10.48550/arXiv.2304.02623", "2304.02623"),
        ("https://api.datacite.org/dois/10.48550/arxiv.2304.05376", "2304.05376"),
        ("2201.11990", "2201.11990"),
        ("https://doi.org/10.1038/s42256-024-00832-8", None),
        ("https://www.ncbi.nlm.nih.gov/pmc/articles/PMC11116106", None),
        (None, None),
    ],
)
def test_arxiv_ids_lose_their_version(reference: str | None, expected: str | None) -> None:
    assert arxiv.arxiv_id(reference) == expected
