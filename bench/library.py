"""Local library benchmark: indexing a folder of Markdown, BibTeX and PDF files, then keeping it current.

Times the first index, a refresh with nothing changed (what every search pays), a refresh after one
file changed, and a top-80 query, on a generated library in a temporary folder. Then reads the real PDFs
of ``../shared/realdata/library/pdf`` (in place; skipped where absent) with pypdf's ``extract_text`` and
with ``read_pdf`` (pypdfium2, with the front matter), side by side.
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import pypdf
from fpdf import FPDF

from pipeline.sources.local import LocalLibrary
from pipeline.sources.pdf import read_pdf

WORDS = (
    "water irrigation filtration osmosis ozone chlorine wetland crop soil nitrate salinity membrane sand "
    "pathogen runoff greenhouse nursery berry lettuce disinfection ultraviolet biochar coagulation"
).split()


def _library(root: Path, notes: int, entries: int, pdfs: int) -> None:
    rng = random.Random(1)

    def text(n: int) -> str:
        return " ".join(rng.choices(WORDS, k=n))

    for i in range(notes):
        (root / f"note{i:04d}.md").write_text(f"# {text(6)} {i}\n\n{text(300)}\n", encoding="utf-8")
    bib = [
        f"@article{{k{i},\n  title = {{{text(7)}}},\n  author = {{Doe, Jane and Roe, Rick}},\n"
        f"  year = {{2020}},\n  abstract = {{{text(120)}}}\n}}\n"
        for i in range(entries)
    ]
    (root / "library.bib").write_text("\n".join(bib), encoding="utf-8")
    for i in range(pdfs):
        pdf = FPDF()
        pdf.add_page()
        pdf.set_font("Helvetica", size=11)
        for _ in range(30):
            pdf.multi_cell(0, 5, text(40), new_x="LMARGIN", new_y="NEXT")
        pdf.output(str(root / f"paper{i:02d}.pdf"))


def _real_pdfs() -> list[Path]:
    """The PDFs of ``../shared/realdata/library/pdf`` next to this checkout; none where it is absent."""
    for place in (Path(__file__).resolve().parents[2] / "shared" / "realdata", Path("/work/shared/realdata")):
        if place.is_dir():
            return sorted((place / "library" / "pdf").glob("*.pdf"))
    return []


def _pdf_readers(rounds: int) -> dict[str, object]:
    """Pages, seconds and pages per second for pypdf and for ``read_pdf`` over the real PDFs, ``rounds`` times."""
    paths = _real_pdfs()
    if not paths:
        print("\n../shared/realdata/library/pdf is not next to this checkout: pypdf vs pypdfium2 skipped")
        return {}
    pages = sum(len(pypdf.PdfReader(path).pages) for path in paths)

    def with_pypdf(path: Path) -> None:
        for page in pypdf.PdfReader(path).pages:
            page.extract_text()

    def with_pdfium(path: Path) -> None:
        read_pdf(path, name=path.name)

    result: dict[str, object] = {"pdfs": len(paths), "pages": pages, "rounds": rounds}
    print("\n| reader | PDFs | pages | seconds | pages/s |\n| --- | --- | --- | --- | --- |")
    for reader, read in (("pypdf", with_pypdf), ("pypdfium2 (read_pdf)", with_pdfium)):
        started = time.perf_counter()
        for _ in range(rounds):
            for path in paths:
                read(path)
        seconds = (time.perf_counter() - started) / rounds
        key = reader.split()[0]
        result[f"{key}_s"], result[f"{key}_pages_per_s"] = round(seconds, 3), round(pages / seconds, 1)
        print(f"| {reader} | {len(paths)} | {pages} | {seconds:.2f} | {pages / seconds:.0f} |")
    return result


def run(quick: bool) -> dict[str, object]:
    notes, entries, pdfs = (200, 200, 10) if quick else (1000, 1000, 50)
    with tempfile.TemporaryDirectory(prefix="litminer-bench-") as folder:
        root, index = Path(folder) / "library", Path(folder) / "index"
        root.mkdir()
        _library(root, notes, entries, pdfs)
        library = LocalLibrary(root, index)
        started = time.perf_counter()
        library.refresh()
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        library.refresh()
        unchanged_ms = (time.perf_counter() - started) * 1000
        changed = root / "note0007.md"
        changed.write_text(changed.read_text(encoding="utf-8") + "\nozone\n", encoding="utf-8")
        later = time.time_ns() + 1_000_000_000
        os.utime(changed, ns=(later, later))
        started = time.perf_counter()
        library.refresh()
        one_changed_ms = (time.perf_counter() - started) * 1000
        reread = list(library.reindexed)
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            library.search("ozone membrane filtration of irrigation water", 80)
            timings.append((time.perf_counter() - started) * 1000)
        index_mb = library.index_path().stat().st_size / 1e6
    result: dict[str, object] = {
        "files": f"{notes} .md + 1 .bib ({entries} entries) + {pdfs} .pdf",
        "records": notes + entries + pdfs,
        "first_index_s": round(first_s, 2),
        "refresh_unchanged_ms": round(unchanged_ms, 1),
        "refresh_one_changed_ms": round(one_changed_ms, 1),
        "files_reread": reread,
        "search_top80_median_ms": round(statistics.median(timings), 1),
        "index_mb": round(index_mb, 1),
    }
    print("\n## library\n")
    print(
        "| library | records | first index | refresh, unchanged | refresh, 1 file changed "
        "| search (refresh + top 80), median | index |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {result['files']} | {result['records']} | {first_s:.2f} s | {unchanged_ms:.0f} ms | "
        f"{one_changed_ms:.0f} ms | {result['search_top80_median_ms']} ms | {index_mb:.1f} MB |"
    )
    result["pdf_readers"] = _pdf_readers(1 if quick else 3)
    return result
