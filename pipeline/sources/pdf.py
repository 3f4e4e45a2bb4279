"""A PDF's text, page by page, and its front matter (title, authors, year, DOI, arXiv id, abstract), with pdfium.

The title comes from the first page's layout (its largest lines near the top) checked against the
metadata title; authors from the names printed under the title (preferring the metadata Author field);
the year from a date printed on the first page, else from the arXiv id, else the latest year the
references cite. pdfium is not thread-safe, so every call into it holds one module-wide lock.
"""

from __future__ import annotations

import ctypes
import datetime
import math
import re
import threading
import unicodedata
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import msgspec
from rapidfuzz import fuzz

from contracts import Section
from pipeline.sources.markup import normalise_doi

if TYPE_CHECKING:
    import pypdfium2  # type: ignore[import-untyped]

ABSTRACT_CHARS = 2000
PAGE_SEPARATOR = "\n\n"

_LOCK = threading.Lock()

# Spacing accents as TeX fonts draw them, and the combining marks they stand for.
_ACCENTS = {
    "\u02c7": "\u030c",  # ˇ caron
    "\u00b4": "\u0301",  # ´ acute
    "\u0060": "\u0300",  # ` grave
    "\u00a8": "\u0308",  # ¨ diaeresis
    "\u02dc": "\u0303",  # ˜ tilde
    "\u02c6": "\u0302",  # ˆ circumflex
    "\u02d8": "\u0306",  # ˘ breve
    "\u02d9": "\u0307",  # ˙ dot above
    "\u02da": "\u030a",  # ˚ ring
    "\u02dd": "\u030b",  # ˝ double acute
    "\u00af": "\u0304",  # ¯ macron
}
_TRAILING_ACCENTS = {"\u00b8": "\u0327", "\u02db": "\u0328"}  # ¸ cedilla and ˛ ogonek come after their letter
_ACCENTED = re.compile(f"([{''.join(_ACCENTS)}])([^\\W\\d_])|([^\\W\\d_])([{''.join(_TRAILING_ACCENTS)}])")
_LIGATURES = str.maketrans({"ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "st", "ﬆ": "st"})
# NULs, and the soft hyphens with which pdfium marks a word broken at the end of a line.
_DROPPED = dict.fromkeys(map(ord, "\x00\x02\ufffe\u00ad"))

_DOI = re.compile(r"\b10\.\d{4,9}/[^\s\"<>]+")
_ARXIV_ID = r"(\d{4}\.\d{4,5}|[a-z][a-zA-Z.-]+/\d{7})(?:v\d+)?"
_ARXIV_STAMP = re.compile(rf"arXiv:\s?{_ARXIV_ID}\s*\[[\w.-]+\]")
_ARXIV = re.compile(rf"arXiv:\s?{_ARXIV_ID}", re.IGNORECASE)
_ARXIV_NAME = re.compile(r"(?<![\d.])(\d{4}\.\d{4,5})(?:v\d+)?(?![\d])")

_YEAR = r"((?:19|20)\d\d)\b"
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?"
    r"|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_DATES = (
    re.compile(rf"\b{_MONTH}\s+(?:\d{{1,2}}(?:\s*[-–]\s*\d{{1,2}})?,?\s+)?{_YEAR}"),  # April 3, 2012; July 5 - 10, 2020
    re.compile(rf"\b\d{{1,2}}\s+{_MONTH},?\s+{_YEAR}"),  # 5 Apr 2023
    re.compile(rf"\b(?:Dated|Received|Accepted|Published|Submitted|Copyright|Proceedings)\b[^\n]*?\b{_YEAR}", re.I),
    re.compile(rf"(?:©|\(c\)|\bc)\s?{_YEAR}"),  # pdfium reads TeX's © as "c"
)

_HEADINGS = (
    r"abstract|introduction|background|related works?|methods?|methodology|materials and methods|methods and materials"
    r"|experiments?|experimental (?:setup|section|details)|results|results and discussion|discussion"
    r"|conclusions?|conclusions? and future work|future work|limitations|acknowledge?ments?|references|bibliography"
    r"|appendix(?:\s+[A-Z0-9]{1,3})?(?:\s*[:.—–-]\s*.+)?|appendices|supplementary (?:information|materials?)"
    r"|supporting information|data availability(?: statement)?|code availability|author contributions"
    r"|competing interests|conflicts? of interest|ethics statement"
)
_KNOWN_HEADING = re.compile(rf"(?:{_HEADINGS})\s*[:.]?", re.IGNORECASE)
_NUMBERED = re.compile(r"(\d{1,2}(?:\.\d{1,2}){0,3})\.?\s+(\S.*)")
_ROMAN = re.compile(r"([IVX]{1,5})\.\s+([^a-z]+)")
_ABSTRACT = re.compile(r"(?:abstract|summary)\s*(?:[:.—–-]\s*(.*))?", re.IGNORECASE)
_END_OF_ABSTRACT = re.compile(r"(?:keywords?|key words|index terms|ccs concepts|additional key words)\b", re.I)

_AFFILIATION = re.compile(
    r"\b(?:universit|institut|department|dept\b|inc\b|school|laborator|college|faculty|centre|center|corporation"
    r"|e-?mail)|@",
    re.IGNORECASE,
)
_MARKERS = re.compile(r"[†∗‡¶□⋄§∥♯♮♭*#\d]+")
_NAME_SPLIT = re.compile(r"[,;|&]|\band\b")
_TITLE_JUNK = re.compile(r"^(?:untitled|microsoft word|layout|doi\b|pii\b|\S+\.(?:pdf|docx?|tex|dvi)$)", re.I)


class PdfText(msgspec.Struct, frozen=True, kw_only=True):
    """A PDF's text and the front matter found on its first page.

    ``text`` holds the pages joined by a blank line, ``pages`` the offset where each page starts in it
    (``pages[0] == 0``) and ``sections`` the headings found in it. ``title`` is "" when none could be
    found (the caller falls back on the file name); ``doi`` is normalised, ``arxiv_id`` has no version.
    """

    title: str
    authors: list[str]
    year: int | None
    doi: str | None
    arxiv_id: str | None
    abstract: str
    text: str
    pages: list[int]
    sections: list[Section]


class _Line(NamedTuple):
    """A line of the first page as laid out: its text, font size (points) and vertical extent."""

    text: str
    size: float
    top: float
    bottom: float


class _Raw(NamedTuple):
    """What pdfium gives: each page's text, the first page's lines and height, and the metadata."""

    pages: list[str]
    lines: list[_Line]
    height: float
    metadata: dict[str, str]


def read_pdf(source: Path | bytes, *, name: str = "", max_pages: int | None = None) -> PdfText:
    """The text and front matter of a PDF file (or its bytes); ``name``, the file name, may give its arXiv id.

    Raises ``ValueError`` for a file that is not a readable PDF, that needs a password, or that has more than
    ``max_pages`` pages (counted before any page is read).
    """
    raw = _extract(source, max_pages)
    pages = [_normalise(page) for page in raw.pages]
    starts, offset = [], 0
    for page in pages:
        starts.append(offset)
        offset += len(page) + len(PAGE_SEPARATOR)
    text = PAGE_SEPARATOR.join(pages)
    lines = [line._replace(text=_normalise(line.text)) for line in raw.lines]
    first = pages[0] if pages else ""
    title, end = _title(lines, raw.height, raw.metadata.get("Title", ""), first)
    printed: list[str] = []
    front: int | None = None  # the line after the title and the authors, where the front matter goes on
    if end:
        printed, front = _printed_authors(lines, end)
    arxiv_id = _arxiv_id(first, name)
    sections = _sections(text)
    return PdfText(
        title=title,
        authors=_authors(raw.metadata.get("Author", ""), printed),
        year=_year(first, arxiv_id) or _cited_year(text, sections),
        doi=_doi(PAGE_SEPARATOR.join(pages[:2])),
        arxiv_id=arxiv_id,
        abstract=_abstract([line.text for line in lines], pages[1] if len(pages) > 1 else "", front),
        text=text,
        pages=starts,
        sections=sections,
    )


def _extract(source: Path | bytes, max_pages: int | None = None) -> _Raw:
    """Each page's text, the first page's laid-out lines, its height and the metadata; under the pdfium lock."""
    # imported here: only processes that read a PDF load pdfium (the API never does)
    import pypdfium2  # noqa: PLC0415
    import pypdfium2.raw as pdfium_c  # type: ignore[import-untyped]  # noqa: PLC0415

    with _LOCK:
        try:
            document = pypdfium2.PdfDocument(source)
        except pypdfium2.PdfiumError as exc:
            if getattr(exc, "err_code", None) == pdfium_c.FPDF_ERR_PASSWORD:
                raise ValueError("an encrypted PDF that needs a password") from exc
            raise ValueError(f"not a readable PDF ({exc})") from exc
        try:
            if max_pages is not None and len(document) > max_pages:
                raise ValueError(f"{len(document)} pages, over the budget of {max_pages} pages")
            metadata = {key: " ".join(str(value).split()) for key, value in document.get_metadata_dict().items()}
            pages: list[str] = []
            lines: list[_Line] = []
            height = 0.0
            for index in range(len(document)):
                page = document[index]
                textpage = page.get_textpage()
                try:
                    pages.append(textpage.get_text_bounded())
                    if index == 0:
                        lines, height = _layout(textpage), page.get_height()
                finally:
                    textpage.close()
                    page.close()
        except pypdfium2.PdfiumError as exc:
            raise ValueError(f"not a readable PDF ({exc})") from exc
        finally:
            document.close()
    return _Raw(pages, lines, height, metadata)


def _layout(textpage: pypdfium2.PdfTextPage) -> list[_Line]:
    """The page's lines in reading order, each with the font size most of its characters have."""
    import pypdfium2.raw as pdfium_c  # noqa: PLC0415

    lines: list[_Line] = []
    chars: list[str] = []
    sizes: list[float] = []
    tops: list[float] = []
    bottoms: list[float] = []
    matrix = pdfium_c.FS_MATRIX()
    count = textpage.count_chars()
    for index in range(count + 1):
        char = chr(pdfium_c.FPDFText_GetUnicode(textpage.raw, index)) if index < count else "\n"  # the last line's end
        if char == "\n":
            if text := "".join(chars).strip():
                size = Counter(sizes).most_common(1)[0][0] if sizes else 0.0
                lines.append(_Line(text, size, max(tops, default=0.0), min(bottoms, default=0.0)))
            chars, sizes, tops, bottoms = [], [], [], []
        elif char != "\r":
            chars.append(char)
            if not char.isspace():
                pdfium_c.FPDFText_GetMatrix(textpage.raw, index, ctypes.byref(matrix))
                scale = math.sqrt(abs(matrix.a * matrix.d - matrix.b * matrix.c)) or 1.0
                sizes.append(round(pdfium_c.FPDFText_GetFontSize(textpage.raw, index) * scale, 1))
                _, bottom, _, top = textpage.get_charbox(index)
                tops.append(top)
                bottoms.append(bottom)
    return _joined(lines)


def _joined(lines: list[_Line]) -> list[_Line]:
    """The lines with each one that overlaps the previous one joined to it.

    pdfium breaks a line where a superscript (an affiliation marker) ends, so that "Zejiang Shen†" and
    ", Tal August□" come as two lines; they are one printed line, in the size of its longer part.
    """
    joined: list[_Line] = []
    for line in lines:
        previous = joined[-1] if joined else None
        if previous is None or not _overlap(previous, line):
            joined.append(line)
            continue
        glue = "" if line.text[0] in ",.;:)" else " "
        size = previous.size if len(previous.text) >= len(line.text) else line.size
        top, bottom = max(line.top, previous.top), min(line.bottom, previous.bottom)
        joined[-1] = _Line(previous.text + glue + line.text, size, top, bottom)
    return joined


def _overlap(above: _Line, below: _Line) -> bool:
    """Whether two lines share at least half of the shorter one's height (they are one printed line)."""
    shared = min(above.top, below.top) - max(above.bottom, below.bottom)
    shortest = min(above.top - above.bottom, below.top - below.bottom)
    return shortest > 0 and shared >= shortest / 2


def _normalise(text: str) -> str:
    """pdfium's text with ``\\n`` line ends, no NULs or soft hyphens, ligatures spelt out and TeX accents joined."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_DROPPED).translate(_LIGATURES)
    return _ACCENTED.sub(_accented, text)


def _accented(found: re.Match[str]) -> str:
    """One letter with the spacing accent next to it as a single accented letter, when Unicode has one."""
    if found.group(1):
        letter, mark = found.group(2), _ACCENTS[found.group(1)]
    else:
        letter, mark = found.group(3), _TRAILING_ACCENTS[found.group(4)]
    combined = unicodedata.normalize("NFC", ("i" if letter == "ı" else letter) + mark)
    return combined if len(combined) == 1 else found.group(0)


_ABSTRACT_LINE = re.compile(r"abstract\b.*", re.IGNORECASE)


def _title(lines: list[_Line], height: float, metadata: str, page: str) -> tuple[str, int]:
    """The title and the index of the first line after it (0 when its lines are not known); ("", 0) for none.

    The title is the run of lines in the upper half of the page set larger than the body text, the
    largest first; a run that reads like a heading, a table row or the arXiv stamp is passed over. On a
    page set in one size, the first line is the title when an "Abstract" line follows it. The metadata
    title replaces it when the two agree, is taken instead when printed on the page, and when nothing
    else is found.
    """
    body = _body_size(lines)
    upper = [(i, line) for i, line in enumerate(lines) if line.top > height / 2 and line.size > body * 1.1]
    found, end = "", 0
    for size in sorted({line.size for _, line in upper}, reverse=True):
        for start, line in upper:
            if abs(line.size - size) > 0.3:
                continue
            stop = start + 1
            while stop < len(lines) and abs(lines[stop].size - size) <= 0.3:
                stop += 1
            run = " ".join(" ".join(line.text for line in lines[start:stop]).split())
            if _plausible_title(run):
                found, end = run, stop
                break
        if found:
            break
    if not found and any(_ABSTRACT_LINE.fullmatch(line.text.strip()) for line in lines[1:4]):
        # a page set in one size throughout (a generated report): its first line, when an abstract follows
        first = " ".join(lines[0].text.split())
        if _plausible_title(first):
            found, end = first, 1
    if not _plausible_title(metadata) or _TITLE_JUNK.match(metadata):
        return found, end
    if not found:
        return metadata, 0
    if found and fuzz.ratio(_folded(found), _folded(metadata)) >= 90:
        return metadata, end
    if _folded(metadata) in _folded(page):
        return metadata, _printed_at(lines, metadata)
    return found, end


def _printed_at(lines: list[_Line], title: str) -> int:
    """The index of the line after the lines that spell ``title``, or 0 when no run of lines does."""
    wanted = _folded(title)
    for start in range(len(lines)):
        spelt = ""
        for stop in range(start, len(lines)):
            spelt += _folded(lines[stop].text)
            if not wanted.startswith(spelt):
                break
            if spelt == wanted:
                return stop + 1
    return 0


def _body_size(lines: list[_Line]) -> float:
    """The font size most of the page's characters are set in."""
    counts: Counter[float] = Counter()
    for line in lines:
        counts[line.size] += len(line.text)
    return counts.most_common(1)[0][0] if counts else 0.0


def _plausible_title(text: str) -> bool:
    """Whether a line could be a title: words, not a section heading, a table row, a number or the arXiv stamp."""
    words = text.split()
    if not 2 <= len(words) <= 50 or _heading(text) or _ARXIV.search(text):
        return False
    wordy = [w for w in words if sum(c.isalpha() for c in w) >= 3 and not (w.isupper() and len(w) <= 5)]
    return len(wordy) >= len(words) / 2


def _folded(text: str) -> str:
    """Letters and digits only, in lower case: for comparing a title across line breaks and spacing."""
    return "".join(c for c in unicodedata.normalize("NFKD", text).lower() if c.isalnum())


def _printed_authors(lines: list[_Line], start: int) -> tuple[list[str], int]:
    """The names printed from line ``start`` on (under the title), and the index of the line after them.

    The names end at the affiliations, an e-mail address, the abstract or a date; affiliation markers
    (†, ∗, digits) separate names as commas and "and" do.
    """
    stop = start
    while stop < min(len(lines), start + 8):
        text = lines[stop].text
        if _AFFILIATION.search(text) or _ABSTRACT.fullmatch(text) or _date_year(text) or len(text.split()) > 30:
            break
        stop += 1
    joined = _MARKERS.sub("|", " ".join(line.text for line in lines[start:stop]))
    return [name for piece in _NAME_SPLIT.split(joined) if (name := _name(piece))], stop


def _name(piece: str) -> str:
    """A person's name from a piece of an author line ("" when it does not read like one)."""
    words = piece.split()
    if not 2 <= len(words) <= 6 or len(piece) > 60:
        return ""
    if not (words[0][0].isupper() and words[-1][0].isupper()) or any(not c.isalpha() for c in words[-1][-1]):
        return ""
    return " ".join(words)


def _authors(metadata: str, printed: list[str]) -> list[str]:
    """The metadata's authors (``;``-separated), each in its fuller printed form; else the printed names.

    The printed names win when the metadata's do not read as names or share no surname with them.
    """
    listed = [_name(piece) for piece in (metadata.split(";") if ";" in metadata else _NAME_SPLIT.split(metadata))]
    if not metadata.strip() or not all(listed):
        return printed
    fuller = {_initials(name): name for name in printed}
    if printed and not {key[1] for key in fuller} & {_initials(name)[1] for name in listed}:
        return printed
    return [fuller.get(_initials(name), name) for name in listed]


def _initials(name: str) -> tuple[str, str]:
    """A name's first and last word, folded: "Daniel S. Weld" and "Daniel Weld" are the same person."""
    words = name.split()
    return _folded(words[0]), _folded(words[-1])


def _year(page: str, arxiv_id: str | None) -> int | None:
    """The year of a date printed on the first page, else the year of the arXiv id's ``YYMM``."""
    years = [year for line in page.splitlines() if (year := _date_year(line))]
    if years:
        return max(years)
    if arxiv_id and (found := re.search(r"(?:^|/)(\d\d)(\d\d)", arxiv_id)):
        short = int(found.group(1))
        return 1900 + short if short >= 91 else 2000 + short
    return None


def _cited_year(text: str, sections: list[Section]) -> int | None:
    """The latest year in the references (the earliest the paper can be from), when the text has them."""
    starts = [s.start for s in sections if re.fullmatch(r"references|bibliography", s.heading, re.IGNORECASE)]
    if not starts:
        return None
    this_year = datetime.datetime.now(datetime.UTC).year
    years = [int(year) for year in re.findall(r"\b((?:19|20)\d\d)\b", text[starts[-1] :])]
    return max((year for year in years if year <= this_year), default=None)


def _date_year(line: str) -> int | None:
    """The latest year of a date in ``line`` ("April 3, 2012", "Received …", "© 2020"), if it has one."""
    this_year = datetime.datetime.now(datetime.UTC).year
    years = [int(m.group(1)) for pattern in _DATES for m in pattern.finditer(line)]
    years = [year for year in years if year <= this_year + 1]
    return max(years) if years else None


def _doi(text: str) -> str | None:
    """The first DOI in ``text``, without the punctuation that ends its sentence."""
    found = _DOI.search(text)
    if not found:
        return None
    doi = found.group(0).rstrip(".,;:'\"")
    while doi.endswith((")", "]")) and doi.count(doi[-1]) > doi.count("(" if doi[-1] == ")" else "["):
        doi = doi[:-1].rstrip(".,;:")
    return normalise_doi(doi)


def _arxiv_id(page: str, name: str) -> str | None:
    """The arXiv id: from the arXiv stamp on the first page, else from the file name, else cited there."""
    if found := _ARXIV_STAMP.search(page):
        return found.group(1)
    stem = Path(name).name
    if (found := _ARXIV_NAME.search(stem)) and 1 <= int(found.group(1)[2:4]) <= 12:
        return found.group(1)
    if found := _ARXIV.search(page):
        return found.group(1)
    return None


def _abstract(lines: list[str], next_page: str, front: int | None) -> str:
    """The paragraphs after a line "Abstract" up to the first heading, or after the front matter when none.

    ``lines`` are the first page's, ``front`` the index of the first line after the title and authors
    (None when they were not found: then only an "Abstract" line starts one). Lines are joined with spaces.
    """
    lines = [*lines, *next_page.splitlines()]
    start = next((i for i, line in enumerate(lines) if _ABSTRACT.fullmatch(line.strip())), None)
    if start is not None:
        found = _ABSTRACT.fullmatch(lines[start].strip())
        body = [(found.group(1) or "") if found else "", *lines[start + 1 :]]
    elif front is not None:
        rest = lines[front:]
        skip = 0
        while skip < len(rest) and (_front_matter(rest[skip]) or len(rest[skip].split()) < 6):
            skip += 1
        body = rest[skip:]
    else:
        return ""
    paragraph: list[str] = []
    for line in body:
        text = line.strip()
        if _heading(text) or _END_OF_ABSTRACT.match(text) or (paragraph and text.isdigit()):
            break
        if text and not _ARXIV_STAMP.match(text):
            paragraph.append(text)
        if sum(len(t) + 1 for t in paragraph) > ABSTRACT_CHARS:
            break
    return " ".join(" ".join(paragraph).split())[:ABSTRACT_CHARS]


def _front_matter(line: str) -> bool:
    """Whether a line is an affiliation, an address, a date or the like between the authors and the abstract."""
    return bool(_AFFILIATION.search(line) or _date_year(line) or not _MARKERS.sub("", line).strip())


def _sections(text: str) -> list[Section]:
    """The headings in ``text`` (numbered, or a known heading alone on its line) and where their lines start.

    A numbered heading in capitals that wraps ("2 CHARACTERIZING EXPOSITORY" / "WRITING") is read whole.
    """
    lines = [(found.start(), " ".join(found.group(0).split())) for found in re.finditer(r"[^\n]+", text)]
    sections = []
    for index, (start, line) in enumerate(lines):
        if not _heading(line):
            continue
        following = lines[index + 1][1] if index + 1 < len(lines) else ""
        wraps = _numbered(line) and _capitals(line) and _capitals(following) and not _heading(following)
        sections.append(Section(heading=f"{line} {following}" if wraps else line, start=start))
    return sections


def _capitals(line: str) -> bool:
    """Whether a line of a few words has letters, nearly all of them capitals ("LARGE z LIMIT")."""
    letters = [c for c in line if c.isalpha()]
    return bool(letters) and sum(c.isupper() for c in letters) >= 0.8 * len(letters) and len(line.split()) <= 8


def _heading(line: str) -> bool:
    """Whether a line is a section heading: "1 Introduction", "4.2 Computer Science Domain", "I. INTRODUCTION",
    or a known one alone ("References", "Acknowledgments"); table rows and references that start with a
    number are not ("88.857 85.08 …", "6 G. Semerjian, M. Tarzia and F. Zamponi, Phys. Rev. B").
    """
    if _KNOWN_HEADING.fullmatch(line):
        return True
    numbered = _numbered(line)
    words = numbered.group(2).split() if numbered else []
    return (
        0 < len(words) <= 10
        and words[0][0].isupper()
        and not re.fullmatch(r"[A-Z]\.", words[0])
        and any(sum(c.isalpha() for c in w) >= 3 for w in words)
        and not re.fullmatch(r"[\d.,%±()]+", words[-1])
        and line.count(",") < 2
        and not line.endswith((".", ",", ";", ":"))
    )


def _numbered(line: str) -> re.Match[str] | None:
    """The number and the words of a numbered heading's line ("2.1. Data", "IV. RESULTS"), if it reads as one."""
    found = _NUMBERED.fullmatch(line) or _ROMAN.fullmatch(line)
    if found and found.group(1)[0].isdigit() and int(found.group(1).split(".")[0]) > 30:
        return None  # a number, not a section's
    return found
