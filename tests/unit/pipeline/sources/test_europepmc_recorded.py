"""pipeline/sources/europepmc.py on real Europe PMC answers (``core`` and ``lite``), checked against their raw JSON."""

import json
import re
from typing import Any

import pytest

from contracts import Document
from pipeline.sources.europepmc import EuropePMC, _decode
from tests.fixtures.realdata import realdata

REALDATA = realdata()
ANSWERS = REALDATA / "responses" / "europepmc"
FILES = ["search_cancer_core.json", "search_cancer.json"]

#: a "<" that starts no tag ("p < .001", "<1 year"), and the start of the next real tag
BARE_LESS_THAN = re.compile(r"<(?![A-Za-z/!?])")
TAG_START = re.compile(r"<[A-Za-z/]")
HEADING = re.compile(r"<h\d>(.*?)</h\d>")


def _read(name: str) -> tuple[list[dict[str, Any]], list[Document]]:
    """The raw records of a recorded answer and the documents the source reads from it."""
    raw = (ANSWERS / name).read_bytes()
    documents = EuropePMC("https://www.ebi.ac.uk/europepmc/webservices/rest", email=None)._documents(
        _decode(raw), 0, "cancer"
    )
    return json.loads(raw)["resultList"]["result"], documents


def _authors(record: dict[str, Any]) -> int:
    listed = [a for a in record.get("authorList", {}).get("author", []) if a.get("fullName")]
    if listed:
        return len(listed)
    return len([a for a in record.get("authorString", "").rstrip(".").split(",") if a.strip()])


@pytest.mark.parametrize("name", FILES)
def test_every_record_keeps_the_fields_its_raw_answer_holds(name: str) -> None:
    records, documents = _read(name)
    assert len(records) == len(documents) == 25
    assert [d.rank for d in documents] == list(range(1, 26))
    for record, document in zip(records, documents, strict=True):
        assert document.title, record["id"]
        assert bool(document.abstract) == bool(record.get("abstractText")), record["id"]
        assert len(document.authors) == _authors(record), record["id"]
        assert document.doi == (record["doi"].lower() if "doi" in record else None)
        assert document.year == int(record["pubYear"])
        assert document.cited_by == record["citedByCount"]
        assert document.license == record.get("license")
        assert document.open_access is (record["isOpenAccess"] == "Y")
        assert document.retracted is False  # none of these 25 is a retracted publication
    assert sum(bool(d.license) for d in documents) == sum("license" in r for r in records)


def test_core_records_keep_venue_publication_type_and_open_pdf_copies() -> None:
    records, documents = _read("search_cancer_core.json")
    for record, document in zip(records, documents, strict=True):
        assert document.venue == record["journalInfo"]["journal"]["title"]
        assert document.publication_type == record["pubTypeList"]["pubType"][0].lower()
        pdfs = [
            u["url"]
            for u in record.get("fullTextUrlList", {}).get("fullTextUrl", [])
            if u["documentStyle"] == "pdf" and u["availability"] in {"Open access", "Free"}
        ]
        assert sorted(document.pdf_urls) == sorted(pdfs), record["id"]
    assert {d.publication_type for d in documents} >= {"journal article", "review", "research-article"}
    assert sum(bool(d.pdf_urls) for d in documents) == 9


def test_a_bare_less_than_sign_in_an_abstract_is_kept_verbatim() -> None:
    records, documents = _read("search_cancer_core.json")
    found: dict[str, list[str]] = {}
    for record, document in zip(records, documents, strict=True):
        abstract = record.get("abstractText", "")
        for bare in BARE_LESS_THAN.finditer(abstract):
            following = TAG_START.search(abstract, bare.end())
            stretch = abstract[bare.start() : following.start() if following else None][:40]
            stretch = " ".join(stretch.split())
            found.setdefault(record["id"], []).append(stretch)
            assert stretch in document.abstract, record["id"]
    assert sorted(found) == ["39038316", "40245290", "40420324", "40468710"]
    assert sum(len(stretches) for stretches in found.values()) == 5


def test_abstract_headings_stand_on_lines_of_their_own() -> None:
    records, documents = _read("search_cancer_core.json")
    headed = 0
    for record, document in zip(records, documents, strict=True):
        lines = document.abstract.splitlines()
        for heading in HEADING.findall(record.get("abstractText", "")):
            headed += 1
            assert heading.strip() in lines, (record["id"], heading)
        assert all(line.strip() == line != "" for line in lines)
    assert headed > 0
    assert not any("Results Cross" in d.abstract for d in documents)
