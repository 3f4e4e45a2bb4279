"""The papers a dataset cites, as references: BibTeX, RIS and CSL-JSON, and short labels ("Smith et al. 2021").

A paper is cited when a row no reviewer excluded quotes it for a value: a generated identifier cites nothing,
and the quotes of a rejected cell back no value any more. Each cited paper is one reference, once, however
many rows cite it (papers are told apart by source id: the search merged duplicates before).

Author names come as one string each ("Ludwig van Beethoven", "Smith, John"); they are split into family and
given names by BibTeX's own rules (bibtexparser's parser). A name that is one word, or reads as an organisation,
is kept whole. Braces are never part of a name (BibTeX leftovers), so they are dropped first.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Literal

import msgspec
from bibtexparser.entrypoint import write_string
from bibtexparser.library import Library
from bibtexparser.middlewares import NameParts
from bibtexparser.middlewares.names import InvalidNameError, parse_single_name_into_parts
from bibtexparser.model import Block, Entry, Field
from pylatexenc.latexencode import UnicodeToLatexEncoder  # type: ignore[import-untyped]

from contracts import GENERATED_SOURCE, Citation, CitationMetadata, Dataset, DatasetRow
from pipeline.review import included
from pipeline.text import keywords

ReferenceFormat = Literal["bibtex", "ris", "csl-json"]

#: media type and file extension of each reference format
MEDIA_TYPES: dict[ReferenceFormat, str] = {
    "bibtex": "application/x-bibtex",
    "ris": "application/x-research-info-systems; charset=utf-8",
    "csl-json": "application/vnd.citationstyles.csl+json",
}
EXTENSIONS: dict[ReferenceFormat, str] = {"bibtex": "bib", "ris": "ris", "csl-json": "json"}

#: words that make a name an organisation's rather than a person's
_ORGANISATION = frozenset(
    """agency association center centre collaboration commission committee consortium council department foundation
    group initiative institute laboratory ministry network organisation organization project society survey team
    university""".split()
)
#: a word BibTeX styles would lower-case wrongly: a capital after its first character ("UV", "pH", "COVID-19")
_CASED = re.compile(r"[A-Za-z0-9][^ ]*[A-Z]")
#: the LaTeX encoder bibtexparser uses (pylatexenc): accents as commands, so the file is ASCII, and TeX's specials
#: escaped; every command braced ("N{\'u}{\~n}ez"), as BibTeX's name splitter reads a bare "\~" as a space. A
#: character without a command (CJK, say) stays as it is, in UTF-8, which biber and bibtexparser read.
_LATEX = UnicodeToLatexEncoder(replacement_latex_protection="braces-all", unknown_char_warning=False)


class Name(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename={"particle": "non-dropping-particle"}):
    """An author's name in parts, as CSL-JSON writes it: ``literal`` alone for a name kept whole."""

    family: str | None = None
    given: str | None = None
    particle: str | None = None
    suffix: str | None = None
    literal: str | None = None


class CslDate(msgspec.Struct, frozen=True, rename={"date_parts": "date-parts"}):
    """A CSL-JSON date: ``{"date-parts": [[2021]]}``."""

    date_parts: list[list[int]]


class CslItem(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    omit_defaults=True,
    rename={"container_title": "container-title", "doi": "DOI", "url": "URL"},
):
    """One reference in CSL-JSON, the format citation processors (Zotero, Pandoc, citeproc) read."""

    id: str
    type: str
    title: str
    author: list[Name] = []
    issued: CslDate | None = None
    container_title: str | None = None
    doi: str | None = None
    url: str | None = None
    number: str | None = None
    publisher: str | None = None
    note: str | None = None


class Reference(msgspec.Struct, frozen=True, kw_only=True):
    """A cited paper: its key (``smith2021water``, unique in the file), its metadata and its authors in parts."""

    key: str
    source_id: str
    metadata: CitationMetadata
    authors: list[Name]


def backing(row: DatasetRow) -> list[Citation]:
    """The citations that back the row's values: no generated identifiers, no quotes of a rejected cell."""
    rejected = {f for f, cell in row.review.cells.items() if cell.status == "rejected"} if row.review else set()
    return [c for c in row.citations if c.source_id != GENERATED_SOURCE and c.field not in rejected]


def cited_papers(rows: Iterable[DatasetRow]) -> dict[str, CitationMetadata]:
    """Each paper the rows cite, by source id, in the order they are first cited."""
    papers: dict[str, CitationMetadata] = {}
    for row in rows:
        for citation in backing(row):
            papers.setdefault(citation.source_id, citation.metadata)
    return papers


def references(dataset: Dataset) -> list[Reference]:
    """The dataset's cited papers (rows a reviewer excluded do not count), sorted by key."""
    papers = cited_papers(included(dataset))
    authors = {source_id: names(metadata) for source_id, metadata in papers.items()}
    keys = _unique([_key(metadata, authors[source_id]) for source_id, metadata in papers.items()])
    made = [
        Reference(key=key, source_id=source_id, metadata=metadata, authors=authors[source_id])
        for key, (source_id, metadata) in zip(keys, papers.items(), strict=True)
    ]
    return sorted(made, key=lambda reference: reference.key)


def export_references(dataset: Dataset, format: ReferenceFormat) -> bytes:
    """The references of the papers the dataset cites, in one of the reference formats."""
    cited = references(dataset)
    if format == "bibtex":
        return to_bibtex(cited).encode()
    return to_ris(cited).encode() if format == "ris" else to_csl_json(cited)


def names(metadata: CitationMetadata) -> list[Name]:
    """The paper's authors in parts, in order."""
    return [n for author in metadata.authors if (n := name(author))]


def name(text: str) -> Name | None:
    """An author's name in parts (BibTeX's rules); kept whole when it is one word or an organisation's."""
    text = " ".join(text.replace("{", " ").replace("}", " ").split())
    words = text.replace(",", " ").lower().split()
    if not words:
        return None
    if len(words) == 1 or "and" in words or _ORGANISATION.intersection(words):
        return Name(literal=text)
    try:
        parts = parse_single_name_into_parts(text, strict=False)
    except InvalidNameError:
        return Name(literal=text)
    if not parts.last:
        return Name(literal=text)
    return Name(
        family=" ".join(parts.last),
        given=" ".join(parts.first) or None,
        particle=" ".join(parts.von) or None,
        suffix=" ".join(parts.jr) or None,
    )


def short_labels(papers: dict[str, CitationMetadata]) -> dict[str, str]:
    """A short label per paper: "Smith 2019", "Smith & Lee 2020", "Smith et al. 2021", "(retracted)" after a
    retracted paper's; the title's start when there are no authors. Papers that would share a label get a, b, …
    after the year, as author-date styles do, so a label names one paper in the whole dataset.
    """
    labels = _unique([_label(metadata) for metadata in papers.values()])
    return {
        source_id: label + (" (retracted)" if metadata.retracted else "")
        for (source_id, metadata), label in zip(papers.items(), labels, strict=True)
    }


# -- the formats ------------------------------------------------------------------------------------------------


def to_bibtex(cited: list[Reference]) -> str:
    """BibTeX: @article when the paper has a venue, @misc otherwise (preprints, reports).

    Text fields are LaTeX-encoded, so the file is ASCII wherever LaTeX has a command for a character (accents as
    commands; braces, ``%``, ``&``, ``$``, ``#``, ``_``, ``~``, ``^``
    and backslashes escaped) and words with inner capitals braced so styles keep their case. Identifiers
    (``doi``, ``url``, ``eprint``) are written verbatim, as biblatex reads them.
    """
    entries: list[Block] = []
    for reference in cited:
        meta = reference.metadata
        journal = _journal(meta)
        fields = {
            "author": " and ".join(_bibtex_name(n) for n in reference.authors),
            "title": " ".join(f"{{{w}}}" if _protected(w) else w for w in _tex(meta.title).split(" ")),
            "journal": _tex(journal) if journal else "",
            "year": str(meta.year) if meta.year else "",
            "doi": _verbatim(meta.doi),
            "url": _verbatim(_url(meta)),
            "eprint": meta.arxiv_id or "",
            "archiveprefix": "arXiv" if meta.arxiv_id else "",
            "note": "Retracted" if meta.retracted else "",
        }
        kind = "article" if journal else "misc"
        entries.append(Entry(kind, reference.key, [Field(key, value) for key, value in fields.items() if value]))
    return write_string(Library(entries))


def to_ris(cited: list[Reference]) -> str:
    """RIS, one record per paper (JOUR with a venue, GEN otherwise), lines ending in CR LF as the format has it."""
    lines: list[tuple[str, str | None]] = []
    for reference in cited:
        meta = reference.metadata
        journal = _journal(meta)
        lines += [("TY", "JOUR" if journal else "GEN"), ("ID", reference.key)]
        lines += [("AU", _ris_name(n)) for n in reference.authors]
        lines += [("TI", meta.title), ("PY", str(meta.year) if meta.year else None), ("JO", journal), ("T2", journal)]
        lines += [("DO", meta.doi), ("UR", _url(meta)), ("N1", "Retracted" if meta.retracted else None), ("ER", "")]
    return "".join(f"{tag}  - {' '.join(value.split())}\r\n" for tag, value in lines if value is not None)


def to_csl_json(cited: list[Reference]) -> bytes:
    """CSL-JSON: a list of items (article-journal with a venue, article for a preprint, document otherwise)."""
    items = []
    for reference in cited:
        meta = reference.metadata
        journal = _journal(meta)
        items.append(
            CslItem(
                id=reference.key,
                type="article-journal" if journal else "article" if meta.arxiv_id else "document",
                title=meta.title,
                author=reference.authors,
                issued=CslDate([[meta.year]]) if meta.year else None,
                container_title=journal,
                doi=meta.doi,
                url=_url(meta),
                number=f"arXiv:{meta.arxiv_id}" if meta.arxiv_id else None,
                publisher="arXiv" if meta.arxiv_id and not journal else None,
                note="Retracted" if meta.retracted else None,
            )
        )
    return msgspec.json.format(msgspec.json.encode(items), indent=2)


# -- parts ------------------------------------------------------------------------------------------------------


def _journal(meta: CitationMetadata) -> str | None:
    """The venue to cite, if any: a preprint server ("arXiv (Cornell University)") is where a preprint is, not a
    journal it appeared in."""
    if meta.venue and meta.arxiv_id and "arxiv" in meta.venue.lower():
        return None
    return meta.venue or None


def _url(meta: CitationMetadata) -> str | None:
    return meta.url or (f"https://arxiv.org/abs/{meta.arxiv_id}" if meta.arxiv_id else None)


def _tex(text: str) -> str:
    """``text`` on one line, in LaTeX."""
    return str(_LATEX.unicode_to_latex(_line(text)))


def _bibtex_name(name: Name) -> str:
    """A name as BibTeX reads it: "van Beethoven, Jr, Ludwig"; a name kept whole in braces ("{WHO}")."""
    if name.literal:
        return f"{{{_tex(name.literal)}}}"
    parts = NameParts(
        first=[_tex(name.given)] if name.given else [],
        von=[_tex(name.particle)] if name.particle else [],
        last=[_tex(name.family)] if name.family else [],
        jr=[_tex(name.suffix)] if name.suffix else [],
    )
    return parts.merge_last_name_first


def _protected(word: str) -> bool:
    """Whether a (LaTeX-encoded) title word needs braces to keep its capitals; words with commands are left."""
    return bool(_CASED.match(word)) and not any(c in word for c in "\\{}")


def _line(text: str) -> str:
    return " ".join(text.split())


def _verbatim(value: str | None) -> str:
    """An identifier as a verbatim field holds it: one line, braces and backslashes percent-encoded."""
    if not value:
        return ""
    return "".join(value.split()).replace("\\", "%5C").replace("{", "%7B").replace("}", "%7D")


def _ris_name(name: Name) -> str:
    """A name as RIS writes it: "Family, Given, Suffix" (the particle goes with the family name)."""
    if name.literal:
        return name.literal
    family = " ".join(p for p in (name.particle, name.family) if p)
    return ", ".join(p for p in (family, name.given, name.suffix) if p)


def _key(metadata: CitationMetadata, authors: list[Name]) -> str:
    """A citation key: first author's family name, year, first word of the title (``smith2021water``), ASCII.

    Without authors the title's first two words stand in (``water2021reuse``).
    """
    title = [w for word in keywords(metadata.title) if (w := _ascii(word))]
    author = _ascii((authors[0].family or authors[0].literal or "") if authors else "") or (
        title.pop(0) if title else ""
    )
    return f"{author}{metadata.year or ''}{title[0] if title else ''}" or "ref"


def _ascii(text: str) -> str:
    """``text`` folded to lower-case ASCII letters and digits ("Núñez" -> "nunez"); other letters are dropped."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]", "", folded)


def _label(meta: CitationMetadata) -> str:
    """A paper's short label before disambiguation: "Smith et al. 2021", or the start of its title."""
    year = str(meta.year) if meta.year else "n.d."
    families = [n.literal or " ".join(p for p in (n.particle, n.family) if p) for n in names(meta)]
    if not families:
        return f"{_shortened(meta.title)} {year}"
    if len(families) == 1:
        return f"{families[0]} {year}"
    if len(families) == 2:
        return f"{families[0]} & {families[1]} {year}"
    return f"{families[0]} et al. {year}"


def _shortened(title: str, limit: int = 40) -> str:
    """The title's start: whole words up to ``limit`` characters, then an ellipsis."""
    title = _line(title)
    if len(title) <= limit:
        return title
    cut = title[: limit + 1].rsplit(" ", 1)[0] if " " in title[:limit] else title[:limit]
    return cut.rstrip(" ,;:.") + "…"


def _unique(labels: list[str]) -> list[str]:
    """``labels`` made unique: those shared by several get "a", "b"… appended ("smith2021watera", "smith2021waterb")."""
    shared = Counter(labels)
    taken = set(labels)
    seen: Counter[str] = Counter()
    unique = []
    for label in labels:
        candidate = label
        while shared[label] > 1 and candidate in taken:
            seen[label] += 1
            candidate = label + _letters(seen[label])
        taken.add(candidate)
        unique.append(candidate)
    return unique


def _letters(number: int) -> str:
    """1 -> "a", 26 -> "z", 27 -> "aa": a suffix that tells same-named things apart."""
    letters = ""
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return letters
