"""pipeline/sources/local.py: a folder of BibTeX, CSV, JSONL, Markdown, text and PDF files, indexed in SQLite."""

import asyncio
import json
import os
import re
import sqlite3
from pathlib import Path

import msgspec
import pytest
from bibtexparser.model import Entry, Field
from fpdf import FPDF
from pypdf import PdfWriter

from pipeline.errors import SourceError
from pipeline.sources.base import Page
from pipeline.sources.library_formats import LibraryRecord, _bibtex_fields
from pipeline.sources.local import LocalLibrary, _Reading, sample_corpus_path
from tests.fixtures.realdata import realdata

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
    assert zotero.venue == "Journal of Horticultural Water" and zotero.pdf_urls == []
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


def test_unreadable_files_are_skipped_with_warnings_kept_but_reported_once(tmp_path):
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

    assert library.refresh() == [] and library.reindexed == []  # reported by the refresh that read the files
    assert library.warnings() == warnings  # and kept with them in the index until they change


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
    # The next search reads nothing, so it has nothing to warn about: a job is told about a file once.
    assert asyncio.run(collect()) == [msgspec.structs.replace(page, warnings=[])]


def test_missing_root_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        LocalLibrary(tmp_path / "nowhere", tmp_path / "index").search("water", 5)


REPEATED_FIELDS = r"""
@article{ozone2021,
  title = {Ozone against {F}usarium in recirculating water},
  title = {A second title that is ignored},
  author = {M{\"u}ller, Hans},
  annotation = {First note},
  annotation = {Second note},
  file = {Full Text PDF:files/1/first.pdf:application/pdf},
  file = {Full Text PDF:files/2/second.pdf:application/pdf},
  year = {2021},
}
@article{copper2019, title = {Copper ionisation of irrigation water}, year = {2019}}
"""

REPEATED_KEYS = r"""
@string{wr = {Water Research}}
@article{lee2020, title = {Slow sand filters in nurseries}, year = {2020}}
@article{lee2020,
  title = {Chlorine dioxide in drip lines},
  author = {M{\"u}ller, Hans and Lee, Ann},
  journal = wr,
  year = {2020},
  file = {Full Text PDF:files/3/chlorine.pdf:application/pdf},
}
@article{lee2020, title = {Copper ionisation of irrigation water}, year = {2020}}
@article{lee2020-2, title = {Peracetic acid for greenhouse benches}, year = {2020}}
@article{kim2019, title = {UV lamps for nutrient solution}, year = {2019}}
@article{kim2019, title = {Ozone dosing of nutrient solution}, note = {one}, note = {two}, year = {2019}}
@article{untitled2018, year = {2018}}
@article{open, title = {Never closed
"""

ENTRY_BLOCK = re.compile(r"^@(\w+)\s*\{\s*([^,\s]*)", re.MULTILINE)


def bib_library(tmp_path: Path, name: str, text: str) -> LocalLibrary:
    root = tmp_path / "library"
    root.mkdir()
    (root / name).write_text(text)
    return LocalLibrary(root, tmp_path / "index")


def test_an_entry_that_repeats_a_field_keeps_its_first_value_and_every_attached_pdf(tmp_path):
    library = bib_library(tmp_path, "fields.bib", REPEATED_FIELDS)
    make_pdf(library.root / "files" / "1" / "first.pdf", ["Spores were counted on agar plates."])
    make_pdf(library.root / "files" / "2" / "second.pdf", ["Residual ozone was logged every minute."])

    assert library.refresh() == [
        "fields.bib: 1 entry repeats a field (annotation, file, title); the first value is kept,"
        " all values of file are joined"
    ]
    [entry] = library.search("fusarium recirculating", 5)
    assert (entry.id, entry.title, entry.authors, entry.year) == (
        "ozone2021",
        "Ozone against Fusarium in recirculating water",
        ["Müller, Hans"],
        2021,
    )
    assert entry.full_text is not None
    assert "agar plates" in entry.full_text and "every minute" in entry.full_text
    assert ids(library, "spores agar") == ids(library, "residual ozone logged") == ["ozone2021"]
    assert ids(library, "copper ionisation") == ["copper2019"]


def test_repeated_fields_keep_the_first_value_but_join_files_and_keywords():
    entry = Entry(
        "article",
        "key",
        [
            Field("Title", "First"),
            Field("title", "Second"),
            Field("keywords", "ozone, fusarium"),
            Field("keywords", "disinfection"),
            Field("file", "A:a.pdf:application/pdf"),
            Field("file", ""),
            Field("file", "B:b.pdf:application/pdf"),
        ],
    )
    assert _bibtex_fields(entry) == {
        "title": "First",
        "keywords": "ozone, fusarium, disinfection",
        "file": "A:a.pdf:application/pdf;B:b.pdf:application/pdf",
    }


def test_entries_that_share_a_citation_key_each_become_a_record_with_a_unique_id(tmp_path):
    library = bib_library(tmp_path, "keys.bib", REPEATED_KEYS)
    make_pdf(library.root / "files" / "3" / "chlorine.pdf", ["Emitters stayed clear of biofilm."])

    warnings = library.refresh()
    assert warnings[:2] == [
        "keys.bib: 1 entry repeats a field (note); the first value is kept",
        "keys.bib: 3 entries share a citation key with an earlier entry (first: lee2020, kim2019);"
        " read as lee2020-3, lee2020-4, kim2019-2",
    ]
    # A real syntax error is still skipped, with its line.
    assert warnings[2:] == ["keys.bib:16: not valid BibTeX (Unexpectedly reached end of file.); skipped"]

    # Read like any other entry: LaTeX decoded, co-authors split, @string resolved, the PDF attached.
    [chlorine] = library.search("chlorine dioxide drip lines", 1)
    assert (chlorine.id, chlorine.authors, chlorine.venue) == (
        "lee2020-3",
        ["Müller, Hans", "Lee, Ann"],
        "Water Research",
    )
    assert ids(library, "biofilm emitters") == ["lee2020-3"]
    found = {title: ids(library, title) for title in ("slow sand filters", "copper ionisation", "peracetic acid")}
    assert found == {
        "slow sand filters": ["lee2020"],
        "copper ionisation": ["lee2020-4"],
        "peracetic acid": ["lee2020-2"],
    }
    assert ids(library, "uv lamps") == ["kim2019"] and ids(library, "ozone dosing") == ["kim2019-2"]
    with sqlite3.connect(library.index_path()) as db:
        stored = sorted(json.loads(raw)["id"] for (raw,) in db.execute("SELECT json FROM records"))
    # Every entry is a record but untitled2018, which has no title.
    assert stored == ["kim2019", "kim2019-2", "lee2020", "lee2020-2", "lee2020-3", "lee2020-4"]


def real_bib(name: str) -> tuple[str, list[str], list[LibraryRecord]]:
    """A real BibTeX export, read in place: its text, the warnings about it, and the records read from it."""
    folder = realdata() / "library" / "bib"
    reading = _Reading(folder, folder, name)
    records = reading.records()
    return (folder / name).read_text(encoding="utf-8"), reading.warnings, records


def entry_keys(text: str) -> list[str]:
    """The citation keys of the file's entry blocks, counted from the raw text rather than by bibtexparser."""
    return [key for kind, key in ENTRY_BLOCK.findall(text) if kind.lower() not in ("comment", "string", "preamble")]


def test_a_real_zotero_export_with_repeated_fields_loses_no_entry():
    name = "accord_semantic_bim_biblatex.bib"
    text, warnings, records = real_bib(name)
    read = [record.id for record in records]
    assert len(read) == len(entry_keys(text)) and len(set(read)) == len(read)
    assert read == entry_keys(text)  # no key is shared, so every entry keeps its own
    assert warnings == [f"{name}: 5 entries repeat a field (annotation, doi); the first value is kept"]


def test_a_real_export_with_shared_citation_keys_loses_no_entry(tmp_path):
    name = "ldac.bib"
    text, warnings, records = real_bib(name)
    read = [record.id for record in records]
    keys = entry_keys(text)
    shared = len(keys) - len(set(keys))
    assert shared > 0 and len(read) == len(keys) and len(set(read)) == len(read)
    assert set(keys) <= set(read)
    renamed = [record for record in records if record.id not in keys]
    assert len(renamed) == shared
    [warning] = warnings
    first = next(key for number, key in enumerate(keys) if key in keys[:number])
    assert warning.startswith(f"{name}: {shared} entries share a citation key with an earlier entry (first: {first}, ")
    assert f"; read as {renamed[0].id}, " in warning

    # The whole file as a library: the same single warning, and a renamed entry is found under its new id.
    library = LocalLibrary(realdata() / "library" / "bib" / name, tmp_path)
    assert library.refresh() == warnings
    assert renamed[0].id in ids(library, renamed[0].title)
