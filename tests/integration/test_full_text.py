"""Full text from open-access copies: real paper PDFs (``../shared/realdata/library/pdf``, read in place) served by
a loopback stand-in of an open-access host, found through OpenAlex's wire format, read by a job that cites their
body text with page numbers; and the copies a download must refuse."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import msgspec
import pytest

from contracts import Document, FieldDefinition, GenerateRequest
from contracts.progress import FullTextFetched, read_data
from pipeline.settings import Settings
from tests.conftest import follow
from tests.fixtures.http import serving
from tests.fixtures.llm import Call, FakeLLM, Reply, rows_reply
from tests.fixtures.realdata import realdata

PDFS = realdata() / "library" / "pdf"
MAX_BYTES = 2_000_000  # the S2ORC paper (2.15 MB) is over it

#: path on the stand-in → (title, how the copy is served)
WORKS = {
    "beyond.pdf": ("Beyond Summarization: Designing AI Support for Real-World Expository Writing Tasks", "slow"),
    "perspective.pdf": ("A Perspective on Explanations of Molecular Prediction Models", "pdf"),
    "s2orc.pdf": ("S2ORC: The Semantic Scholar Open Research Corpus", "pdf"),
    "bethe.pdf": ("Quantum Criticality for Extended Nodes on a Bethe Lattice", "missing"),
    "scibert.pdf": ("SciBERT: A Pretrained Language Model for Scientific Text", "landing page"),
    "moved.pdf": ("Explanations of molecular prediction models, a redirected copy", "to a private address"),
}
FILES = {
    "beyond.pdf": "2304.02623v1.pdf",
    "perspective.pdf": "paperqa_paper.pdf",
    "s2orc.pdf": "2020.acl-main.447.pdf",
    "bethe.pdf": "arxiv_1111.2011v2.pdf",
    "scibert.pdf": "1903.10676.pdf",
}
#: a sentence of each readable paper's body, and the page it is printed on
BODY = {
    "beyond.pdf": (
        "As an important middle step between reading and writing, the writer typically takes a long time to "
        "inspect and reason over the evidence collected",
        3,
    ),
    "perspective.pdf": ("XAI can be viewed as a two-step process.", 3),
}


def works_answer(base: str) -> bytes:
    """An OpenAlex ``/works`` answer listing the papers, each with its copy on the stand-in as the best OA PDF."""
    results = [
        {
            "id": f"https://openalex.org/W{i}",
            "doi": f"https://doi.org/10.5555/{name.removesuffix('.pdf')}",
            "title": title,
            "publication_year": 2023,
            "authorships": [{"author": {"display_name": "A. Author"}}],
            "abstract_inverted_index": {
                w: [j] for j, w in enumerate(f"Explanations and writing support: {title}".split())
            },
            "best_oa_location": {"pdf_url": f"{base}/pdf/{name}", "license": "cc-by", "is_oa": True},
            "open_access": {"is_oa": True, "oa_status": "green"},
            "cited_by_count": 10 + i,
            "type": "article",
        }
        for i, (name, (title, _)) in enumerate(WORKS.items(), start=1)
    ]
    return msgspec.json.encode({"meta": {"count": len(results), "next_cursor": None}, "results": results})


@pytest.fixture
def open_access_host() -> Iterator[tuple[str, Counter[str]]]:
    """OpenAlex and an open-access host on one loopback port; counts the requests of each path."""
    requests: Counter[str] = Counter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            requests[path] += 1
            name = path.removeprefix("/pdf/")
            how = WORKS.get(name, ("", "missing"))[1]
            status, headers, body = 200, {"Content-Type": "application/pdf"}, b""
            if path == "/openalex/works":
                headers["Content-Type"] = "application/json"
                body = works_answer(f"http://{self.headers['Host']}")
            elif how == "missing":
                status = 404
            elif how == "landing page":
                headers["Content-Type"] = "text/html"
                body = b"<html><body>Sign in to read this article</body></html>"
            elif how == "to a private address":
                status, headers = 302, {"Location": "http://169.254.169.254/latest/meta-data/paper.pdf"}
            else:
                if how == "slow":
                    time.sleep(0.3)
                body = (PDFS / FILES[name]).read_bytes()
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(Handler) as url:
        yield url, requests


def cite_the_body(call: Call) -> Reply:
    """A model that states, for the paper whose body it is shown, the body sentence above, quoted."""
    names = call.field_names
    shown = " ".join(call.document.split())
    title = call.document.splitlines()[0].removeprefix("Title:").strip()
    for sentence, _ in BODY.values():
        if sentence in shown:
            return rows_reply(({names[0]: title, names[1]: sentence}, {names[0]: title, names[1]: sentence}))
    return rows_reply()


def test_a_job_reads_open_access_pdfs_and_cites_their_body_with_page_numbers(
    llm_settings: Settings, llm: FakeLLM, make_jobs, run_worker, open_access_host: tuple[str, Counter[str]]
) -> None:
    base, requests = open_access_host
    settings = msgspec.structs.replace(
        llm_settings,
        sources=("openalex",),
        openalex_url=f"{base}/openalex",
        openalex_api_key="k",
        full_text_hosts=("127.0.0.1",),
        full_text_max_bytes=MAX_BYTES,
        http_retries=0,
        http_timeout_s=5,
    )
    llm.responder = cite_the_body
    jobs = make_jobs(settings_=settings)
    run_worker(settings_=settings)
    fields = [
        FieldDefinition(name="paper", description="The paper's title"),
        FieldDefinition(name="finding", description="A statement the paper makes about explanations or writing"),
    ]
    request = GenerateRequest(user_query="explanations and writing support", rows=2, field_definitions=fields)
    job = jobs.submit(request)
    events = follow(jobs, job.task_id, timeout=120)
    assert events[-1].status == "completed", events[-1].message

    (fetched,) = [d for d in (read_data(e.data) for e in events) if isinstance(d, FullTextFetched)]
    assert (fetched.full_text, fetched.documents, fetched.failed) == (2, 6, 4)
    reasons = dict((why, int(n)) for n, why in (r.split(" ", 1) for r in fetched.reasons.split("; ")))
    assert reasons == {
        f"too large (larger than {MAX_BYTES} bytes)": 1,
        "HTTP 404": 1,
        "not a PDF (text/html)": 1,
        "a private address (169.254.169.254)": 1,
    }
    message = next(e.message for e in events if e.message.startswith("Full text for"))
    assert message.startswith("Full text for 2 of 6 documents (")

    documents = {d.full_text_from: d for d in jobs.store.jobs.get_output(job.task_id, "documents", list[Document])}
    dataset = jobs.dataset(job.task_id)
    cited = {c.metadata.title: c for row in dataset.rows for c in row.citations if c.field == "finding"}
    assert len(cited) == 2
    for name, (sentence, page) in BODY.items():
        document = documents[f"{base}/pdf/{name}"]
        citation = cited[document.title]
        assert (citation.part, citation.page_number) == ("full_text", page)
        assert citation.char_start is not None and citation.char_end is not None and document.full_text
        assert document.full_text[citation.char_start : citation.char_end] == citation.text_span
        page_text = document.full_text[document.pages[page - 1] : document.pages[page]]
        assert citation.text_span in page_text
        assert " ".join(citation.text_span.split()) == sentence
        assert citation.metadata.cited_by and citation.metadata.license == "cc-by"
        assert citation.before and citation.after  # a sentence of context either side
    assert {p.title for p in dataset.papers if p.full_text} == {WORKS[n][0] for n in BODY}

    # a second job reads the same copies from the cache: nothing is downloaded twice
    again = jobs.submit(request)
    assert follow(jobs, again.task_id, timeout=120)[-1].status == "completed"
    assert all(requests[f"/pdf/{name}"] == 1 for name in BODY), requests
    assert not any(re.search(r"169\.254", path) for path in requests)
