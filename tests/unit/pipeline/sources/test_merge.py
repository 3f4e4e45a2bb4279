"""pipeline.sources.merge: one document per paper, whichever sources returned it and in which version."""

from __future__ import annotations

from contracts import Document, Provenance
from pipeline.sources.merge import DocumentPool

TITLE = "Beyond Summarization: Designing AI Support for Real-World Expository Writing Tasks"


def document(source: str, **fields: object) -> Document:
    values: dict[str, object] = {"id": f"{source}-1", "title": TITLE, "source": source} | fields
    provenance = [Provenance(source=source, id=str(values["id"]), rank=1)]
    return Document(**values, provenance=provenance)  # type: ignore[arg-type]


def test_a_preprint_and_its_published_version_become_one_document_with_both_ids():
    pool = DocumentPool()
    pool.add(
        document(
            "arxiv", arxiv_id="2304.02623", authors=["Zejiang Shen"], pdf_urls=["https://arxiv.org/pdf/2304.02623"]
        )
    )
    pool.add(document("crossref", doi="10.1145/3544549.3585600", authors=["Shen, Zejiang"], cited_by=12))
    pool.add(document("openalex", doi="10.48550/arxiv.2304.02623", authors=["Zejiang Shen"]))
    (paper,) = pool.documents
    assert (paper.doi, paper.arxiv_id, paper.cited_by) == ("10.1145/3544549.3585600", "2304.02623", 12)
    assert [p.source for p in paper.provenance] == ["arxiv", "crossref", "openalex"] and pool.duplicates == 2


def test_the_arxiv_doi_alone_finds_the_preprint():
    pool = DocumentPool()
    pool.add(document("arxiv", title="A preprint", arxiv_id="2304.02623"))
    pool.add(document("openalex", title="Another title entirely", doi="10.48550/arxiv.2304.02623"))
    assert len(pool.documents) == 1 and pool.documents[0].doi == "10.48550/arxiv.2304.02623"


def test_same_title_different_papers_stay_apart():
    pool = DocumentPool()
    pool.add(document("crossref", doi="10.1/a", authors=["Ana Ruiz"]))
    pool.add(document("openalex", doi="10.48550/arxiv.2304.02623", authors=["Ben Osei"]))  # another first author
    pool.add(document("europepmc", doi="10.1/b", authors=["Ana Ruiz"]))  # two publisher DOIs
    assert len(pool.documents) == 3


def test_full_text_travels_with_its_pages_and_sections():
    pool = DocumentPool()
    pool.add(document("openalex", doi="10.1/a"))
    pool.add(document("local", doi="10.1/a", full_text="page one\n\npage two", pages=[0, 10], full_text_from="a.pdf"))
    (paper,) = pool.documents
    assert (paper.full_text, paper.pages, paper.full_text_from) == ("page one\n\npage two", [0, 10], "a.pdf")
