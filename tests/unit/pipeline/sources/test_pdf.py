"""pipeline/sources/pdf.py: a PDF's text, pages, sections and front matter, read with pdfium."""

import io
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pypdfium2  # type: ignore[import-untyped]
import pytest
from fpdf import FPDF
from pypdf import PdfReader, PdfWriter

from pipeline.sources import pdf
from pipeline.sources.pdf import PdfText, read_pdf
from tests.fixtures.realdata import realdata

REALDATA = realdata()
PDFS = REALDATA / "library" / "pdf"

S2ORC = "2020.acl-main.447.pdf"
BEYOND = "2304.02623v1.pdf"
BETHE = "arxiv_1111.2011v2.pdf"
PERSPECTIVE = "paperqa_paper.pdf"
SCIBERT = "1903.10676.pdf"


@cache
def paper(name: str) -> PdfText:
    return read_pdf(PDFS / name, name=name)


@pytest.mark.parametrize(
    ("name", "title", "authors", "year", "arxiv_id"),
    [
        (
            S2ORC,
            "S2ORC: The Semantic Scholar Open Research Corpus",
            ["Kyle Lo", "Lucy Lu Wang", "Mark Neumann", "Rodney Kinney", "Daniel S. Weld"],
            2020,
            None,
        ),
        (
            BEYOND,
            "Beyond Summarization: Designing AI Support for Real-World Expository Writing Tasks",
            [
                "Zejiang Shen",
                "Tal August",
                "Pao Siangliulue",
                "Kyle Lo",
                "Jonathan Bragg",
                "Jeff Hammerbacher",
                "Doug Downey",
                "Joseph Chee Chang",
                "David Sontag",
            ],
            2023,
            "2304.02623",
        ),
        (
            BETHE,
            "Quantum Criticality for Extended Nodes on a Bethe Lattice in the Large Connectivity Limit",
            ["James M. Murray", "Adrian Del Maestro", "Zlatko Tešanović"],
            2012,
            "1111.2011",
        ),
        (
            PERSPECTIVE,
            "A Perspective on Explanations of Molecular Prediction Models",
            ["Geemi P. Wellawatte", "Heta A. Gandhi", "Aditi Seshadri", "Andrew D. White"],
            2022,  # no date is printed: the latest year its references cite
            None,
        ),
        (SCIBERT, "", [], 2019, "1903.10676"),  # one results page: no title printed; id and year from the name
    ],
)
def test_front_matter_is_what_the_first_page_prints(
    name: str, title: str, authors: list[str], year: int, arxiv_id: str | None
) -> None:
    found = paper(name)
    assert found.title == title
    assert found.authors == authors
    assert found.year == year
    assert found.arxiv_id == arxiv_id
    assert found.doi is None  # none of the five prints a DOI on its first two pages


@pytest.mark.parametrize(
    ("name", "begins", "ends"),
    [
        (S2ORC, "We introduce S2ORC,1 a large corpus of 81.1M", "for text mining over academic text."),
        (BEYOND, "Large language models have introduced exciting", "discuss considerations for future research."),
        (BETHE, "Theoretical description of anisotropic systems", "to the theory describing a single node."),
        (
            PERSPECTIVE,
            "Chemists can be skeptical in using deep learning",
            "can uncover structure-property relationships.",
        ),
        (SCIBERT, "", ""),
    ],
)
def test_abstract_runs_from_its_heading_or_the_front_matter_to_the_first_section(
    name: str, begins: str, ends: str
) -> None:
    abstract = paper(name).abstract
    assert abstract.startswith(begins)
    assert abstract.endswith(ends)
    assert "\n" not in abstract
    assert len(abstract) <= pdf.ABSTRACT_CHARS


@pytest.mark.parametrize(("name", "count"), [(S2ORC, 15), (BEYOND, 4), (BETHE, 8), (PERSPECTIVE, 41), (SCIBERT, 1)])
def test_pages_slice_the_text_page_by_page(name: str, count: int) -> None:
    found = paper(name)
    assert len(PdfReader(PDFS / name).pages) == count
    with pdf._LOCK:
        document = pypdfium2.PdfDocument(PDFS / name)
        try:
            expected = []
            for index in range(len(document)):
                page = document[index]
                textpage = page.get_textpage()
                expected.append(pdf._normalise(textpage.get_text_bounded()))
                textpage.close()
                page.close()
        finally:
            document.close()
    assert len(found.pages) == len(expected) == count
    assert found.pages[0] == 0
    padded = found.text + pdf.PAGE_SEPARATOR  # each page's slice ends with the separator, the last one's too
    ends = [*found.pages[1:], len(padded)]
    for start, end, text in zip(found.pages, ends, expected, strict=True):
        assert padded[start:end] == text + pdf.PAGE_SEPARATOR


@pytest.mark.parametrize(
    ("name", "page", "sentence"),
    [
        (S2ORC, 3, "We process PDFs from the Semantic Scholar corpus"),
        (PERSPECTIVE, 10, "These are\nknown as surrogate models."),
        (BETHE, 1, "(Dated: April 3, 2012)"),
    ],
)
def test_a_sentence_is_on_its_page(name: str, page: int, sentence: str) -> None:
    found = paper(name)
    ends = [*found.pages[1:], len(found.text)]
    on = [
        number
        for number, (start, end) in enumerate(zip(found.pages, ends, strict=True), 1)
        if sentence in found.text[start:end]
    ]
    assert on == [page]


def test_sections_are_the_numbered_and_known_headings_where_their_lines_start() -> None:
    found = paper(S2ORC)
    headings = [section.heading for section in found.sections]
    assert headings[:4] == ["Abstract", "1 Introduction", "2 Constructing the corpus", "2.1 Processing PDFs"]
    assert {"5 Pretraining BERT on S2ORC", "8 Conclusion", "Acknowledgements", "References"} <= set(headings)
    for section in found.sections:
        assert found.text[section.start :].startswith(section.heading)
        assert section.start == 0 or found.text[section.start - 1] == "\n"


def test_a_heading_in_capitals_that_wraps_is_read_whole() -> None:
    headings = [section.heading for section in paper(BEYOND).sections]
    assert "2 CHARACTERIZING EXPOSITORY WRITING" in headings
    assert [s.heading for s in paper(BETHE).sections][:2] == [
        "I. INTRODUCTION",
        "II. SELF-CONSISTENT ACTION IN THE LARGE z LIMIT",
    ]


def test_table_rows_and_references_are_not_headings() -> None:
    assert [section.heading for section in paper(SCIBERT).sections] == [
        "4.2 Computer Science Domain",
        "4.3 Multiple Domains",
        "5 Discussion",
        "5.1 Effect of Finetuning",
        "5.2 Effect of SCIVOCAB",
    ]
    assert not any("Phys. Rev." in section.heading for section in paper(BETHE).sections)


def test_words_broken_at_a_line_end_and_tex_accents_are_joined() -> None:
    assert "because we are performing relation classification" in paper(SCIBERT).text
    assert "Zlatko Tešanović" in paper(BETHE).text
    assert "Büttner" in paper(PERSPECTIVE).text
    for name in (S2ORC, BEYOND, BETHE, PERSPECTIVE, SCIBERT):
        assert not {"\r", "\x00", "\x02", "\ufffe"} & set(paper(name).text)


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("Zlatko Teˇsanovi´c", "Zlatko Tešanović"),
        ("B¨uttner", "Büttner"),
        ("Garc´ıa", "García"),
        ("Franc¸ois", "François"),
        ("Saier and Farber ¨ (2019)", "Saier and Farber ¨ (2019)"),  # the accent is not next to its letter
        ("`code` and ´s", "`code` and ś"),  # a grave accent over a consonant is a backquote
        ("cor\x02pus\r\nline\x00", "corpus\nline"),
        ("the ﬁrst ﬂow", "the first flow"),
    ],
)
def test_normalise(raw: str, text: str) -> None:
    assert pdf._normalise(raw) == text


@pytest.mark.parametrize(
    ("line", "heading"),
    [
        ("1 Introduction", True),
        ("2.1. Data", True),
        ("4.2 Computer Science Domain", True),
        ("IV. CORRECTIONS AT FINITE N", True),
        ("Materials and Methods", True),
        ("ACKNOWLEDGMENTS", True),
        ("Appendix A: Proofs", True),
        ("88.857 85.08 86.72 88.73 90.01", False),
        ("2 shows that the model improves", False),
        ("3 A. Georges, G. Kotliar, W. Krauth and M. J. Rozenberg,", False),
        ("5 Conversely, it is sometimes found that the Bethe lattice effectively behaves as", False),
        ("Average 73.58 77.16 76.01 79.27", False),
        ("12 BERT-Base 88.73", False),
        ("2020 Association for Computational Linguistics", False),
    ],
)
def test_heading(line: str, heading: bool) -> None:
    assert pdf._heading(line) is heading


def test_threads_read_in_turn() -> None:
    names = [S2ORC, BETHE, PERSPECTIVE, SCIBERT] * 3
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda name: read_pdf(PDFS / name, name=name), names))
    assert results == [paper(name) for name in names]


def test_bytes_read_as_the_file() -> None:
    assert read_pdf((PDFS / BETHE).read_bytes(), name=BETHE) == paper(BETHE)


def _generated() -> bytes:
    """A two-page paper without metadata: a title set large, authors, an affiliation, an abstract, sections."""
    document = FPDF()
    document.add_page()

    def paragraph(style: str, size: int, text: str) -> None:
        document.set_font("Helvetica", style, size)
        document.multi_cell(0, size * 0.5, text, new_x="LMARGIN", new_y="NEXT")

    paragraph("B", 20, "Ozonation of Recycled Irrigation Water in Greenhouse Nurseries")
    paragraph("", 12, "Jane Doe, Hans M\u00fcller and Ana Silva")
    paragraph("", 12, "Department of Horticulture, University of Nowhere")
    paragraph("B", 11, "Abstract")
    paragraph("", 10, "Ozone was bubbled through recycled irrigation water. " * 6)
    paragraph("B", 11, "1 Introduction")
    paragraph("", 10, "Nurseries recycle water (https://doi.org/10.1234/OZONE.2020). " * 12)
    document.add_page()
    paragraph("B", 11, "2 Methods")
    paragraph("", 10, "We measured dissolved ozone every hour. " * 12)
    return bytes(document.output())


def test_a_paper_without_metadata() -> None:
    found = read_pdf(_generated())
    assert found.title == "Ozonation of Recycled Irrigation Water in Greenhouse Nurseries"
    assert found.authors == ["Jane Doe", "Hans Müller", "Ana Silva"]
    assert found.abstract.startswith("Ozone was bubbled through recycled irrigation water. Ozone")
    assert found.abstract.endswith("irrigation water.")
    assert found.doi == "10.1234/ozone.2020"
    assert (found.year, found.arxiv_id) == (None, None)
    assert [section.heading for section in found.sections] == ["Abstract", "1 Introduction", "2 Methods"]
    assert len(found.pages) == 2
    assert found.text[found.pages[1] :].startswith("2 Methods")


def test_an_arxiv_style_file_name_gives_the_id_and_year() -> None:
    found = read_pdf(_generated(), name="arxiv_2304.02623v1.pdf")
    assert (found.arxiv_id, found.year) == ("2304.02623", 2023)
    assert read_pdf(_generated(), name="2020.acl-main.447.pdf").arxiv_id is None


def test_no_title_when_nothing_is_set_larger() -> None:
    document = FPDF()
    document.add_page()
    document.set_font("Helvetica", size=10)
    for row in ("Field Task Dataset SOTA BERT-Base SCIBERT", "BC5CDR 88.857 85.08 86.72 88.73 90.01"):
        document.cell(0, 5, row, new_x="LMARGIN", new_y="NEXT")
    found = read_pdf(bytes(document.output()))
    assert (found.title, found.authors, found.abstract) == ("", [], "")


def _encrypted(user_password: str, algorithm: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(_generated())))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_a_permissions_only_encrypted_pdf_is_read() -> None:
    found = read_pdf(_encrypted("", "RC4-128"))
    assert found.title == "Ozonation of Recycled Irrigation Water in Greenhouse Nurseries"


def test_an_aes_permissions_only_encrypted_pdf_is_read() -> None:
    # pypdf writes AES with cryptography (a dev dependency); pdfium reads it without
    found = read_pdf(_encrypted("", "AES-128"))
    assert found.title == "Ozonation of Recycled Irrigation Water in Greenhouse Nurseries"


def test_a_pdf_that_needs_a_password_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a password"):
        read_pdf(_encrypted("secret", "RC4-128"))


def test_a_file_that_is_not_a_pdf_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "paper.pdf"
    garbage.write_bytes(b"%PDF-1.7\nnot really a PDF at all\n")
    with pytest.raises(ValueError, match="not a readable PDF"):
        read_pdf(garbage)
    with pytest.raises(ValueError, match="not a readable PDF"):
        read_pdf(_generated()[:400])
