"""The local library against hostile files: special files, files over budget, page bombs, and many readers at once."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from fpdf import FPDF

from pipeline.settings import Settings
from pipeline.sources.library_formats import LibraryBudget, read_file
from pipeline.sources.local import LocalLibrary, _claim
from pipeline.sources.parsing import ReadFailed
from pipeline.sources.registry import library_budget
from tests.unit.pipeline.sources.test_local import make_pdf

T = TypeVar("T")
NOTE = "# Ultrafiltration membranes\n\nMembranes removed bacteria from irrigation water.\n"


def page_bomb(path: Path, inflated_mb: float) -> Path:
    """A one-page PDF of a few KB whose content stream inflates to ``inflated_mb`` MB of text operators.

    Written byte by byte: a library that tolerated only well-made PDFs could not be trusted with this one. pdfium
    spends seconds per MB on it (about 8 s and 400 MB of memory for 4 MB here).
    """
    content = b"BT /F1 1 Tf " + b"(a) Tj\n" * int(inflated_mb * 1e6 / 7) + b"ET"
    stream = zlib.compress(content, 9)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    pdf = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(pdf))
        pdf += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(pdf)
    pdf += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    pdf += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    pdf += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(pdf))
    return path


def pages_pdf(path: Path, pages: int) -> Path:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for number in range(1, pages + 1):
        pdf.add_page()
        pdf.cell(0, 8, f"Page {number} on reverse osmosis brine.")
    pdf.output(str(path))
    return path


def stored_warnings(library: LocalLibrary) -> dict[str, str | None]:
    with sqlite3.connect(library.index_path()) as db:
        return dict(db.execute("SELECT path, warning FROM files").fetchall())


def in_thread(call: Callable[[], T], timeout: float) -> T:
    """``call()``'s result (or exception), run in a thread given ``timeout`` seconds: a test that would block
    fails instead."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s"
    if error:
        raise error[0]
    return result[0]


def test_a_named_pipe_is_skipped_with_one_warning_and_the_rest_is_searched(tmp_path):
    root = tmp_path / "library"
    (root / "files").mkdir(parents=True)
    (root / "good.md").write_text(NOTE)
    os.mkfifo(root / "pipe.md")
    os.mkfifo(root / "files" / "pipe.pdf")
    (root / "refs.bib").write_text("@article{piped, title = {Piped attachments}, file = {:files/pipe.pdf:pdf}}")
    library = LocalLibrary(root, tmp_path / "index")
    try:
        # Opening a named pipe waits for a writer: before the check, this search never returned.
        documents = in_thread(lambda: library.search("ultrafiltration membranes", 5), timeout=60)
    finally:
        for pipe in (root / "pipe.md", root / "files" / "pipe.pdf"):
            # Let a reader stuck on the pipe go (opening it for writing succeeds only when a reader waits).
            with contextlib.suppress(OSError):
                os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
    assert [d.id for d in documents] == ["good.md"]
    assert library.warnings() == [
        "pipe.md: not a regular file (a named pipe); skipped",
        "refs.bib: entry piped attaches files/pipe.pdf: not a regular file (a named pipe); ignored",
    ]
    [piped] = library.search("piped attachments", 5)
    assert piped.id == "piped" and piped.full_text is None
    assert library.refresh() == [] and library.reindexed == []


def test_a_file_is_opened_only_if_it_is_a_regular_file_then(tmp_path):
    """A named pipe put where a checked file was is refused by the reader too, without waiting for a writer."""
    os.mkfifo(tmp_path / "swapped.md")
    with pytest.raises(ReadFailed, match="not a regular file"):
        in_thread(lambda: read_file(tmp_path / "swapped.md", "swapped.md", LibraryBudget()), timeout=10)


def test_files_over_the_size_or_page_budget_are_skipped_with_one_warning_until_they_change(tmp_path):
    root = tmp_path / "library"
    root.mkdir()
    (root / "good.md").write_text(NOTE)
    (root / "huge.md").write_text("# Huge\n\n" + "brine " * 300_000)  # 1.7 MiB
    pages_pdf(root / "long.pdf", 5)
    pages_pdf(root / "short.pdf", 3)
    make_pdf(root / "files" / "attached.pdf", ["Attached brine text."])
    (root / "files" / "attached.pdf").write_bytes((root / "files" / "attached.pdf").read_bytes() + b"%" * 2**21)
    (root / "refs.bib").write_text("@article{big, title = {Big attachment}, file = {:files/attached.pdf:pdf}}")
    library = LocalLibrary(root, tmp_path / "index", LibraryBudget(max_file_bytes=2**20, max_pages=3))

    assert library.refresh() == [
        "huge.md: 1.7 MiB, over the budget of 1 MiB for a library file; skipped",
        "long.pdf: 5 pages, over the budget of 3 pages; skipped",
        "refs.bib: entry big attaches files/attached.pdf: 2 MiB, over the budget of 1 MiB for a library file; ignored",
    ]
    assert sorted(library.reindexed) == ["good.md", "huge.md", "long.pdf", "refs.bib", "short.pdf"]
    assert [d.id for d in library.search("reverse osmosis brine", 5)] == ["short.pdf"]
    assert library.refresh() == [] and library.reindexed == []  # not read again, not reported again
    assert stored_warnings(library)["long.pdf"] == "long.pdf: 5 pages, over the budget of 3 pages; skipped"

    pages_pdf(root / "long.pdf", 2)  # changed: read again, now within the budget
    assert library.refresh() == [] and library.reindexed == ["long.pdf"]
    assert sorted(d.id for d in library.search("reverse osmosis brine", 5)) == ["long.pdf", "short.pdf"]


def test_full_text_is_cut_at_a_page_boundary_to_the_budget(tmp_path):
    root = tmp_path / "library"
    root.mkdir()
    pages_pdf(root / "brine.pdf", 40)
    (root / "long.md").write_text("# Long note on brine\n\n" + "brine disposal " * 1000)
    library = LocalLibrary(root, tmp_path / "index", LibraryBudget(max_text_chars=1000))

    by_id = {d.id: d for d in library.search("brine", 5)}
    pdf, note = by_id["brine.pdf"], by_id["long.md"]
    assert pdf.full_text is not None and note.full_text is not None
    assert len(pdf.full_text) <= 1000 and pdf.full_text.rstrip().endswith("brine.")  # whole pages only
    assert len(pdf.pages) == pdf.full_text.count("Page ") < 40 and pdf.full_text.count("reverse osmosis") > 10
    assert len(note.full_text) == 1000


@pytest.mark.timeout(60)
def test_a_page_bomb_is_stopped_at_the_parse_timeout_and_not_read_again(tmp_path):
    root = tmp_path / "library"
    root.mkdir()
    (root / "good.md").write_text(NOTE)
    page_bomb(root / "bomb.pdf", 8)  # ~10 KB, pdfium would work on it for about 15 s and 800 MB
    library = LocalLibrary(root, tmp_path / "index", LibraryBudget(parse_timeout_s=2))

    started = time.monotonic()
    warnings = library.refresh()
    elapsed = time.monotonic() - started
    assert warnings == ["bomb.pdf: reading took longer than 2 s; skipped"]
    # The point of the test is the timeout: a coarse bound, far below the bomb's own time, far above 2 s.
    assert elapsed < 10
    assert stored_warnings(library) == {"bomb.pdf": warnings[0], "good.md": None}
    assert [d.id for d in library.search("ultrafiltration", 5)] == ["good.md"]
    assert library.refresh() == [] and library.reindexed == []  # the index remembers: it is not parsed again


def test_two_refreshes_at_once_read_each_new_file_once(tmp_path, caplog):
    root = tmp_path / "library"
    root.mkdir()
    page_bomb(root / "slow.pdf", 1)  # a couple of seconds to read: both refreshes are surely at work together
    for number in range(6):
        (root / f"note{number}.md").write_text(f"# Note {number} on ultrafiltration\n\nMembrane {number}.\n")
    (root / "broken.csv").write_text('id,title\n1,"quoted"trailing\n')
    index = tmp_path / "index"
    libraries = [LocalLibrary(root, index), LocalLibrary(root, index)]  # as two workers have
    start = threading.Barrier(2)

    def refresh(library: LocalLibrary) -> list[str]:
        start.wait()
        return library.refresh()

    caplog.set_level("DEBUG", logger="pipeline.sources.local")
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda lib=lib: results.append(refresh(lib))) for lib in libraries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert len(results) == 2  # both refreshes ended (neither raised: a new index opened by two at once)
    read = Counter(
        found.group(1) for r in caplog.records if (found := re.search(r": read (\S+) in [\d.]+ s", r.getMessage()))
    )
    files = {"slow.pdf", "broken.csv", *(f"note{n}.md" for n in range(6))}
    assert read == Counter(files)  # each file parsed once, by one of the two
    assert sorted(libraries[0].reindexed + libraries[1].reindexed) == sorted(files)
    # … and its warning reported once, by the refresh that read it
    assert sorted(warning for warnings in results for warning in warnings) == [
        "broken.csv: ',' expected after '\"'; skipped"
    ]
    assert len(libraries[0].search("ultrafiltration membrane", 10)) == 6


def test_a_refresh_waits_for_a_claimed_file_and_reads_it_if_its_claimant_gave_up(tmp_path):
    root = tmp_path / "library"
    root.mkdir()
    (root / "note.md").write_text(NOTE)
    library = LocalLibrary(root, tmp_path / "index")
    with _claim(library.index_path().with_suffix(".locks"), "note.md", wait=False) as claimed:  # another worker's
        assert claimed
        waiting = threading.Thread(target=library.refresh, daemon=True)
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive()  # it cannot finish while the file is claimed
    # The claimant let go without indexing the file (as a worker killed mid-read): the waiting refresh reads it.
    waiting.join(30)
    assert not waiting.is_alive() and library.reindexed == ["note.md"]


def test_the_budget_comes_from_the_settings():
    settings = Settings.from_env(
        {
            "LITMINER_LIBRARY_MAX_FILE_MB": "5",
            "LITMINER_LIBRARY_MAX_PAGES": "40",
            "LITMINER_LIBRARY_PARSE_TIMEOUT_S": "2.5",
            "LITMINER_LIBRARY_MAX_TEXT_CHARS": "20000",
        }
    )
    assert library_budget(settings) == LibraryBudget(
        max_file_bytes=5 * 2**20, max_pages=40, parse_timeout_s=2.5, max_text_chars=20_000
    )
    assert library_budget(Settings()) == LibraryBudget()
