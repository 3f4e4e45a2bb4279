"""pipeline/sources/local.py: a folder of BibTeX, CSV, JSONL, Markdown, text and PDF files, indexed in SQLite."""

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest
from fpdf import FPDF
from pypdf import PdfWriter

from pipeline.errors import SourceError
from pipeline.sources.base import Page
from pipeline.sources.local import LocalLibrary, sample_corpus_path

BIBTEX = r"""
@article{smith2020,
  title = {{O}zonation of {R}ecycled {I}rrigation {W}ater in {G}reenhouses},
  author = {Smith, Jane and M{\"u}ller, Hans},
  year = {2020},
  doi = {10.1234/ozone.2020},
  url = {https://example.org/ozone},
  journal = {Journal of Horticultural Water},
  abstract = {Ozone was bubbled through recycled irrigation water.},
  file = {Full Text PDF:files/12/ozonation.pdf:application/pdf;Snapshot:files/12/snapshot.html:text/html},
}
"""

MENDELEY = """
@inproceedings{kim2018,
  title = {Chlorine dioxide dosing in hydroponic nutrient solution},
  author = {Kim, Soo},
  year = {2018},
  booktitle = {Proceedings of the Greenhouse Water Symposium},
  file = {:papers/chlorine.pdf:pdf},
}
"""

CSV = (
    "ID,Title,Abstract,Authors,Year,DOI,URL,Venue\n"
    'csv1,Slow sand filtration for nursery runoff,"Sand beds removed Pythium, mostly.",'
    '"Lee, Ann; Park, Min",2019,10.5555/sand,https://example.org/sand,Water Research Letters\n'
)

MARKDOWN = """# Constructed wetlands for greenhouse effluent

Wetland cells removed nitrate from greenhouse effluent
over two seasons.

## Methods

Samples were taken weekly.
"""


def make_pdf(path: Path, lines: list[str], title: str | None = None) -> Path:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    for line in lines:
        pdf.cell(0, 8, line, new_x="LMARGIN", new_y="NEXT")
    if title:
        pdf.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return path


def make_library(root: Path) -> Path:
    (root / "zotero").mkdir(parents=True)
    (root / "zotero" / "My Library.bib").write_text(BIBTEX)
    make_pdf(root / "zotero" / "files" / "12" / "ozonation.pdf", ["Residual ozone was read by indigo colorimetry."])
    (root / "mendeley.bib").write_text(MENDELEY)
    make_pdf(root / "papers" / "chlorine.pdf", ["The oxidation-reduction potential stayed near 650 mV."])
    (root / "tables").mkdir()
    (root / "tables" / "papers.csv").write_text(CSV)
    (root / "notes").mkdir()
    (root / "notes" / "wetlands.md").write_text(MARKDOWN)
    lines = ["Biochar amendments for container substrates", "Abstract", "Biochar reduced phosphorus leaching."]
    make_pdf(root / "reports" / "biochar.pdf", [*lines, "1 Introduction", "Substrates lose nutrients."])
    make_pdf(
        root / "reports" / "uv.pdf", ["Lamp dose was 40 mJ per square centimetre."], title="UV disinfection trials"
    )
    return root


def ids(library: LocalLibrary, query: str) -> list[str]:
    return [document.id for document in library.search(query, 10)]


def indexed_files(library: LocalLibrary) -> list[str]:
    with sqlite3.connect(library.index_path()) as db:
        return sorted(path for (path,) in db.execute("SELECT path FROM files"))


def test_every_format_is_found_by_its_own_words(tmp_path):
    library = LocalLibrary(make_library(tmp_path / "library"), tmp_path / "index")
    assert library.refresh() == []

    [zotero] = library.search("ozonation greenhouses", 1)
    assert zotero.id == "smith2020" and zotero.source == "local" and zotero.rank == 1 and zotero.score > 0
    assert zotero.title == "Ozonation of Recycled Irrigation Water in Greenhouses"
    assert zotero.authors == ["Smith, Jane", "Müller, Hans"]
    assert (zotero.year, zotero.doi, zotero.url) == (2020, "10.1234/ozone.2020", "https://example.org/ozone")
    assert zotero.venue == "Journal of Horticultural Water" and zotero.pdf_url is None
    assert zotero.abstract == "Ozone was bubbled through recycled irrigation water."
    assert zotero.full_text is not None and "indigo colorimetry" in zotero.full_text
    [provenance] = zotero.provenance
    assert (provenance.source, provenance.id, provenance.rank) == ("local", "smith2020", 1)
    assert provenance.query == "ozonation greenhouses"
    # The attached PDF is that entry's full text, not a paper of its own.
    assert ids(library, "indigo colorimetry") == ["smith2020"]

    [mendeley] = library.search("oxidation-reduction potential", 5)
    assert (mendeley.id, mendeley.year, mendeley.authors) == ("kim2018", 2018, ["Kim, Soo"])
    assert mendeley.venue == "Proceedings of the Greenhouse Water Symposium"

    [row] = library.search("slow sand filtration", 5)
    assert (row.id, row.title, row.year, row.doi) == (
        "csv1",
        "Slow sand filtration for nursery runoff",
        2019,
        "10.5555/sand",
    )
    assert row.authors == ["Lee, Ann", "Park, Min"] and row.venue == "Water Research Letters"
    assert row.abstract == "Sand beds removed Pythium, mostly." and row.full_text is None

    [note] = library.search("constructed wetlands", 5)
    assert (note.id, note.title) == ("notes/wetlands.md", "Constructed wetlands for greenhouse effluent")
    assert note.abstract == "Wetland cells removed nitrate from greenhouse effluent over two seasons."
    assert note.full_text == MARKDOWN

    [report] = library.search("biochar substrates", 5)
    assert (report.id, report.title) == ("reports/biochar.pdf", "Biochar amendments for container substrates")
    assert report.abstract == "Biochar reduced phosphorus leaching."
    assert report.full_text is not None and "Substrates lose nutrients." in report.full_text

    [uv] = library.search("lamp centimetre", 5)
    assert (uv.id, uv.title) == ("reports/uv.pdf", "UV disinfection trials")


def test_sample_jsonl_corpus_still_works_as_a_single_file_root(tmp_path):
    library = LocalLibrary(sample_corpus_path(), tmp_path)
    documents = library.search("water treatment technologies used in specialty crop production", 20)
    assert len(documents) == 20
    assert [d.rank for d in documents] == list(range(1, 21))
    assert [p.rank for d in documents for p in d.provenance] == list(range(1, 21))
    top = " ".join(d.title.lower() for d in documents[:5])
    assert sum(word in top for word in ("treatment", "osmosis", "wetlands", "chlorination", "filtration")) >= 3
    assert library.search("the of and", 5) == []
    assert library.refresh() == [] and library.reindexed == []


def test_refresh_rereads_only_changed_files_and_forgets_removed_ones(tmp_path):
    root = make_library(tmp_path / "library")
    library = LocalLibrary(root, tmp_path / "index")
    library.refresh()
    assert library.reindexed[:2] == ["mendeley.bib", "zotero/My Library.bib"]  # BibTeX first
    assert len(library.reindexed) == 6
    library.refresh()
    assert library.reindexed == []

    note = root / "notes" / "wetlands.md"
    mtime = note.stat().st_mtime_ns
    note.write_text("# Floating treatment wetlands\n\nPlants on rafts took up ammonium.\n")
    os.utime(note, ns=(mtime + 10**9, mtime + 10**9))
    assert ids(library, "ammonium rafts") == ["notes/wetlands.md"]
    assert library.reindexed == ["notes/wetlands.md"]
    assert ids(library, "nitrate seasons") == []

    attached = root / "zotero" / "files" / "12" / "ozonation.pdf"
    mtime = attached.stat().st_mtime_ns
    make_pdf(attached, ["Dissolved ozone was logged by an amperometric probe."])
    os.utime(attached, ns=(mtime + 10**9, mtime + 10**9))
    assert ids(library, "amperometric probe") == ["smith2020"]
    assert library.reindexed == ["zotero/My Library.bib"]
    assert ids(library, "indigo colorimetry") == []

    (root / "tables" / "papers.csv").unlink()
    assert ids(library, "slow sand filtration") == []
    assert library.reindexed == []
    assert "tables/papers.csv" not in indexed_files(library)

    # Without the BibTeX file its PDF is no longer an attachment: it becomes a paper of its own.
    (root / "mendeley.bib").unlink()
    assert ids(library, "oxidation-reduction potential") == ["papers/chlorine.pdf"]
    assert library.reindexed == ["papers/chlorine.pdf"]


def test_paths_outside_the_library_are_never_read(tmp_path):
    outside = make_pdf(tmp_path / "outside.pdf", ["Plutonium inventory of the neighbouring lab."])
    root = tmp_path / "library"
    root.mkdir()
    (root / "refs.bib").write_text(
        "@article{escape2020, title = {Escaping attachments}, file = {Full Text PDF:../outside.pdf:application/pdf}}"
    )
    (root / "linked.pdf").symlink_to(outside)
    (root / "folder").symlink_to(tmp_path, target_is_directory=True)  # not entered at all
    library = LocalLibrary(root, tmp_path / "index")

    assert library.refresh() == [
        "linked.pdf links to a file outside the library; ignored",
        "refs.bib: entry escape2020 attaches ../outside.pdf, which is outside the library; ignored",
    ]
    assert library.search("plutonium inventory", 5) == []
    [entry] = library.search("escaping attachments", 5)
    assert entry.id == "escape2020" and entry.full_text is None
    assert indexed_files(library) == ["linked.pdf", "refs.bib"]


def test_unreadable_files_are_skipped_with_warnings_that_persist(tmp_path):
    root = tmp_path / "library"
    root.mkdir()
    (root / "good.md").write_text("# Ultrafiltration membranes\n\nMembranes removed bacteria.\n")
    writer = PdfWriter(clone_from=make_pdf(tmp_path / "plain.pdf", ["Confidential ultrafiltration data."]))
    writer.encrypt("secret")
    writer.write(root / "locked.pdf")
    (root / "garbage.pdf").write_bytes(b"this is not a PDF at all")
    (root / "latin1.txt").write_bytes("Caf\xe9 wastewater".encode("latin-1"))
    (root / "broken.bib").write_text("@article{open, title = {Never closed\n")
    (root / "bad.csv").write_text('id,title\n1,"quoted"trailing\n')
    library = LocalLibrary(root, tmp_path / "index")

    warnings = library.refresh()
    named = sorted(warning.split(":")[0] for warning in warnings)
    assert named == ["bad.csv", "broken.bib", "garbage.pdf", "latin1.txt", "locked.pdf"]
    assert any("encrypted" in warning for warning in warnings)
    assert "latin1.txt: not UTF-8 text; skipped" in warnings
    assert ids(library, "ultrafiltration") == ["good.md"]

    assert library.refresh() == warnings  # reported again although nothing is re-read
    assert library.reindexed == []


def test_pages_yields_one_page_with_documents_and_warnings(tmp_path):
    root = tmp_path / "library"
    root.mkdir()
    (root / "good.md").write_text("# Ultrafiltration membranes\n\nMembranes removed bacteria.\n")
    (root / "garbage.pdf").write_bytes(b"%PDF-1.4 garbage")
    library = LocalLibrary(root, tmp_path / "index")

    async def collect() -> list[Page]:
        return [page async for page in library.pages("ultrafiltration membranes", 10, None)]  # type: ignore[arg-type]

    [page] = asyncio.run(collect())
    assert [d.id for d in page.documents] == ["good.md"] and page.more is False
    assert len(page.warnings) == 1 and page.warnings[0].startswith("garbage.pdf: ")
    assert asyncio.run(collect()) == [page]


def test_missing_root_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        LocalLibrary(tmp_path / "nowhere", tmp_path / "index").search("water", 5)
