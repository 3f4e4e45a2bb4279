"""pipeline.references: BibTeX, RIS and CSL-JSON of the cited papers, read back by other people's parsers
(bibtexparser 2, rispy, json), by example, for any metadata, and on real recorded records."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import msgspec
import pytest
import rispy  # type: ignore[import-untyped]
from bibtexparser.entrypoint import parse_string
from bibtexparser.library import Library
from bibtexparser.middlewares import LatexDecodingMiddleware, SeparateCoAuthors, SplitNameParts
from bibtexparser.model import Entry
from hypothesis import given
from hypothesis import strategies as st
from pylatexenc.latex2text import LatexNodes2Text  # type: ignore[import-untyped]

from contracts import (
    GENERATED_SOURCE,
    CellReview,
    Citation,
    CitationMetadata,
    Dataset,
    DatasetRow,
    DatasetStats,
    Document,
    FieldDefinition,
    RowReview,
)
from pipeline.extractors.base import citation_metadata
from pipeline.references import Name, export_references, name, references, short_labels
from pipeline.sources import arxiv, crossref, openalex, semantic_scholar
from pipeline.sources.local import _Reading
from tests.fixtures.realdata import realdata
from tests.fixtures.strategies import bounded, tricky_text

ACCENTED = CitationMetadata(
    title="Water {treatment} removes 50% of E. coli & costs $5 per m_3 (#1 ~ ^ \\alpha) with UV-C and pH control",
    authors=["José María Pérez-Núñez", "Ludwig van Beethoven", "{Barnes and Noble}", "Smith, Jr., John"],
    year=2021,
    venue="Water Research",
    doi="10.1016/j.watres_2021.117",
    url="https://doi.org/10.1016/j.watres_2021.117",
)
PREPRINT = CitationMetadata(
    title="ChemCrow: Augmenting large-language models with chemistry tools",
    authors=["Andres M. Bran", "Sam Cox", "Oliver Schilter"],
    year=2023,
    venue="arXiv (Cornell University)",
    arxiv_id="2304.05376",
)
ANONYMOUS = CitationMetadata(title="Irrigation water quality guidelines for growers", year=2019)
RETRACTED = CitationMetadata(
    title="Copper ionization in drip lines", authors=["Lee, Min"], year=2020, venue="Irrig. Sci.", retracted=True
)
SAME_KEY = CitationMetadata(title="Water quality again", authors=["Pérez-Núñez, José"], year=2021, venue="J. W.")
EXCLUDED_ONLY = CitationMetadata(title="Cited by an excluded row only", authors=["Eve Out"], year=2018)
REJECTED_ONLY = CitationMetadata(title="Cited for a rejected cell only", authors=["Rex Jected"], year=2017)


def cite(source_id: str, paper: CitationMetadata, field: str = "name") -> Citation:
    return Citation(source_id=source_id, field=field, text_span="=quote", metadata=paper)


def dataset() -> Dataset:
    """Five cited papers: one cited by two rows, plus papers only an excluded row or a rejected cell cites."""
    identifier = Citation(
        source_id=GENERATED_SOURCE, field="id", text_span="x", metadata=CitationMetadata(title="Generated")
    )
    rows = [
        DatasetRow(row_id="a", row={"name": "A"}, citations=[identifier, cite("p1", ACCENTED), cite("p2", PREPRINT)]),
        DatasetRow(row_id="b", row={"name": "B"}, citations=[cite("p1", ACCENTED), cite("p3", ANONYMOUS)]),
        DatasetRow(
            row_id="c",
            row={"name": "C", "cost": None},
            citations=[cite("p4", RETRACTED), cite("p5", SAME_KEY), cite("p7", REJECTED_ONLY, field="cost")],
            review=RowReview(cells={"cost": CellReview(status="rejected", original=1.0)}),
        ),
        DatasetRow(
            row_id="d", row={"name": "D"}, citations=[cite("p6", EXCLUDED_ONLY)], review=RowReview(excluded=True)
        ),
    ]
    schema = [FieldDefinition(name="name"), FieldDefinition(name="cost", type="float", required=False)]
    return Dataset(
        task_id="t",
        model_name="M",
        query="q",
        schema=schema,
        rows=rows,
        stats=DatasetStats(requested_rows=4, returned_rows=4),
    )


CITED = {"p1": ACCENTED, "p2": PREPRINT, "p3": ANONYMOUS, "p4": RETRACTED, "p5": SAME_KEY}


def read_bibtex(text: str) -> Library:
    """The file as bibtexparser 2 reads it: authors split into their parts, fields LaTeX-decoded to Unicode (the
    decoder leaves the parts of names to ``authors``)."""
    library = parse_string(text)
    for middleware in (SeparateCoAuthors(), SplitNameParts(), LatexDecodingMiddleware()):
        library = middleware.transform(library)
    assert not library.failed_blocks, [b.error for b in library.failed_blocks]
    return library


def authors(entry: Entry) -> list[tuple[list[str], ...]]:
    """The entry's authors as (first, von, last, jr) parts, decoded; a name kept whole has its braces removed."""
    decode = LatexNodes2Text().latex_to_text
    names = entry.fields_dict["author"].value if "author" in entry.fields_dict else []
    return [tuple([decode(part) for part in parts] for parts in (n.first, n.von, n.last, n.jr)) for n in names]


def field(entry: Entry, key: str) -> str | None:
    found = entry.fields_dict.get(key)
    return None if found is None else str(found.value)


def one_line(text: str) -> str:
    return " ".join(text.split())


def as_tex_reads(text: str) -> str:
    """``text`` as LaTeX typesets it and pylatexenc decodes it: "--" is an en dash, "---" an em dash, a straight
    double quote a closing one (LaTeX's ``''``), the hyphen U+2010 "-", a ligature ("ﬁ") its letters; and the
    decoder renders ``\\textasciicircum`` as the modifier letter "ˆ"."""
    text = one_line(unicodedata.normalize("NFKC", text))
    for tex, reads in [("---", "\u2014"), ("--", "\u2013"), ("\u2010", "-"), ("^", "\u02c6"), ('"', "\u201d")]:
        text = text.replace(tex, reads)
    return text


def test_bibtex_has_one_entry_per_cited_paper_that_bibtexparser_reads_back():
    text = export_references(dataset(), "bibtex").decode()
    assert text.isascii()
    entries = {e.key: e for e in read_bibtex(text).entries}
    keys = [r.key for r in references(dataset())]
    assert sorted(entries) == keys == sorted(keys)
    assert all(re.fullmatch(r"[a-z0-9]+", key) for key in keys)
    # two papers would share pereznunez2021water: each gets a letter, in the order they are first cited
    assert keys == [
        "bran2023chemcrow",
        "irrigation2019water",
        "lee2020copper",
        "pereznunez2021watera",
        "pereznunez2021waterb",
    ]

    accented = entries["pereznunez2021watera"]
    assert accented.entry_type == "article"
    assert field(accented, "title") == as_tex_reads(ACCENTED.title)  # braces, %, &, $, _, #, ~, ^, backslash survive
    assert field(accented, "journal") == "Water Research" and field(accented, "year") == "2021"
    assert field(accented, "doi") == ACCENTED.doi and field(accented, "url") == ACCENTED.url
    assert authors(accented) == [
        (["José", "María"], [], ["Pérez-Núñez"], []),
        (["Ludwig"], ["van"], ["Beethoven"], []),
        ([], [], ["Barnes and Noble"], []),  # kept whole: the "and" inside is no second author
        (["John"], [], ["Smith"], ["Jr."]),
    ]
    # words with inner capitals are braced against styles that lower-case titles
    assert "{UV-C}" in text and "{pH}" in text

    preprint = entries["bran2023chemcrow"]
    assert preprint.entry_type == "misc" and field(preprint, "journal") is None
    assert field(preprint, "eprint") == "2304.05376" and field(preprint, "archiveprefix") == "arXiv"
    assert field(preprint, "url") == "https://arxiv.org/abs/2304.05376"

    anonymous = entries["irrigation2019water"]
    assert anonymous.entry_type == "misc" and "author" not in anonymous.fields_dict
    assert field(entries["lee2020copper"], "note") == "Retracted"


def test_ris_reads_back_with_rispy():
    records = rispy.loads(export_references(dataset(), "ris").decode())
    by_id = {r["id"]: r for r in records}
    assert sorted(by_id) == [r.key for r in references(dataset())]
    accented = by_id["pereznunez2021watera"]
    assert accented["type_of_reference"] == "JOUR"
    assert accented["title"] == ACCENTED.title
    assert accented["authors"] == [
        "Pérez-Núñez, José María",
        "van Beethoven, Ludwig",
        "Barnes and Noble",
        "Smith, John, Jr.",
    ]
    assert accented["year"] == "2021" and accented["journal_name"] == "Water Research"
    assert accented["doi"] == ACCENTED.doi and accented["urls"] == [ACCENTED.url]
    assert by_id["bran2023chemcrow"]["type_of_reference"] == "GEN"
    assert by_id["bran2023chemcrow"]["urls"] == ["https://arxiv.org/abs/2304.05376"]
    assert "authors" not in by_id["irrigation2019water"]
    assert by_id["lee2020copper"]["notes"] == ["Retracted"]


def test_csl_json_is_a_list_of_items_with_the_csl_keys():
    items = {item["id"]: item for item in json.loads(export_references(dataset(), "csl-json"))}
    accented = items["pereznunez2021watera"]
    assert accented["type"] == "article-journal" and accented["title"] == ACCENTED.title
    assert accented["author"] == [
        {"family": "Pérez-Núñez", "given": "José María"},
        {"family": "Beethoven", "given": "Ludwig", "non-dropping-particle": "van"},
        {"literal": "Barnes and Noble"},
        {"family": "Smith", "given": "John", "suffix": "Jr."},
    ]
    assert accented["issued"] == {"date-parts": [[2021]]}
    assert accented["container-title"] == "Water Research"
    assert accented["DOI"] == ACCENTED.doi and accented["URL"] == ACCENTED.url
    preprint = items["bran2023chemcrow"]
    assert preprint["type"] == "article" and "container-title" not in preprint
    assert preprint["number"] == "arXiv:2304.05376" and preprint["publisher"] == "arXiv"
    assert items["irrigation2019water"]["type"] == "document" and "author" not in items["irrigation2019water"]
    assert items["lee2020copper"]["note"] == "Retracted"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("John Smith", Name(family="Smith", given="John")),
        ("Smith, John", Name(family="Smith", given="John")),
        ("Ludwig van Beethoven", Name(family="Beethoven", given="Ludwig", particle="van")),
        ("Jean {de la} Fontaine", Name(family="Fontaine", given="Jean", particle="de la")),
        ("Beeblebrox, IV, Zaphod", Name(family="Beeblebrox", given="Zaphod", suffix="IV")),
        ("UNESCO", Name(literal="UNESCO")),
        ("World Health Organization", Name(literal="World Health Organization")),
        ("ATLAS Collaboration", Name(literal="ATLAS Collaboration")),
        ("  {}  ", None),
    ],
)
def test_names_split_by_bibtex_rules_or_kept_whole(text: str, parsed: Name | None) -> None:
    assert name(text) == parsed


def test_short_labels_name_one_paper_each():
    papers = {
        "a": CitationMetadata(title="A", authors=["Jan Smith"], year=2019),
        "b": CitationMetadata(title="B", authors=["Jan Smith", "Bo Lee"], year=2020),
        "c": CitationMetadata(title="C", authors=["Jan Smith", "Bo Lee", "Ann Park"], year=2021),
        "d": CitationMetadata(title="D", authors=["Smith, Jan", "Kai Ito", "Li Wei"], year=2021, retracted=True),
        "e": CitationMetadata(title="Irrigation water quality guidelines for specialty crop growers"),
        "f": CitationMetadata(title="Ozone", authors=["Maria de la Cruz"], year=2022),
    }
    assert short_labels(papers) == {
        "a": "Smith 2019",
        "b": "Smith & Lee 2020",
        "c": "Smith et al. 2021a",
        "d": "Smith et al. 2021b (retracted)",
        "e": "Irrigation water quality guidelines for… n.d.",
        "f": "de la Cruz 2022",
    }


# -- any metadata -----------------------------------------------------------------------------------------------

papers = st.lists(
    st.builds(
        CitationMetadata,
        title=tricky_text,
        authors=st.lists(tricky_text, max_size=3),
        year=st.one_of(st.none(), st.integers(1000, 2100)),
        venue=st.one_of(st.none(), tricky_text),
        doi=st.one_of(st.none(), tricky_text),
        url=st.one_of(st.none(), tricky_text),
    ),
    max_size=4,
)


@bounded
@given(cited=papers)
def test_any_metadata_gives_files_the_parsers_read_with_one_reference_per_paper(cited: list[CitationMetadata]) -> None:
    rows = [DatasetRow(row={}, citations=[cite(f"s{i}", paper)]) for i, paper in enumerate(cited)]
    made = Dataset(
        task_id="t",
        model_name="M",
        query="q",
        schema=[],
        rows=rows,
        stats=DatasetStats(requested_rows=1, returned_rows=1),
    )
    keys = [r.key for r in references(made)]
    assert len(set(keys)) == len(keys) == len(cited) and all(re.fullmatch(r"[a-z0-9]+", key) for key in keys)
    entries = read_bibtex(export_references(made, "bibtex").decode()).entries
    assert [e.key for e in entries] == keys
    assert len(rispy.loads(export_references(made, "ris").decode())) == len(cited)
    assert [item["id"] for item in json.loads(export_references(made, "csl-json"))] == keys


# -- real records -----------------------------------------------------------------------------------------------


@pytest.fixture
def real_papers() -> dict[str, CitationMetadata]:
    """Every record the real Zotero exports and the recorded OpenAlex, Crossref, Semantic Scholar and arXiv answers
    hold, read by litminer's own parsers, as a citation would describe each."""
    data = realdata()
    documents: dict[str, Document] = {}
    for path in sorted((data / "library" / "bib").glob("*.bib")):
        for record in _Reading(path.parent, path.parent, path.name).records():
            documents[f"bib:{path.name}:{record.id}"] = Document(**msgspec.structs.asdict(record), source="local")
    responses = data / "responses"
    answers: list[tuple[str, Path, list[Document]]] = []
    for path in sorted((responses / "openalex").glob("*.json")):
        answers.append(("openalex", path, openalex.parse_answer(path.read_bytes()).documents))
    for path in sorted((responses / "crossref").glob("*.json")):
        answers.append(("crossref", path, crossref.parse_answer(path.read_bytes()).documents))
    for path in sorted((responses / "semantic_scholar").glob("*.json")):
        answers.append(("s2", path, semantic_scholar.parse_answer(path.read_bytes()).documents))
    for path in sorted((responses / "arxiv").glob("*.xml")):
        answers.append(("arxiv", path, arxiv.parse_feed(path.read_bytes()).documents))
    for origin, path, found in answers:
        documents.update({f"{origin}:{path.name}:{d.id}": d for d in found})
    return {source_id: citation_metadata(document) for source_id, document in documents.items()}


def real_dataset(cited: dict[str, CitationMetadata]) -> Dataset:
    rows = [
        DatasetRow(row_id=source_id, row={}, citations=[cite(source_id, paper)]) for source_id, paper in cited.items()
    ]
    return Dataset(
        task_id="t",
        model_name="M",
        query="q",
        schema=[],
        rows=rows,
        stats=DatasetStats(requested_rows=len(rows), returned_rows=len(rows)),
    )


def test_real_records_survive_a_round_trip_through_bibtex_ris_and_csl(real_papers):
    sources = {source_id.split(":")[0] for source_id in real_papers}
    assert sources == {"bib", "openalex", "crossref", "s2", "arxiv"} and len(real_papers) > 700
    made = real_dataset(real_papers)
    by_key = {r.key: r.metadata for r in references(made)}
    assert len(by_key) == len(real_papers)
    with_authors = sum(bool(p.authors) for p in real_papers.values())
    assert sum(bool(p.arxiv_id) for p in real_papers.values()) >= 10 and with_authors > 600

    text = export_references(made, "bibtex").decode()
    entries = read_bibtex(text).entries
    assert len(entries) == len(real_papers)
    for entry in entries:
        paper = by_key[entry.key]
        assert as_tex_reads(field(entry, "title") or "") == as_tex_reads(paper.title), entry.key
        assert field(entry, "doi") == paper.doi, entry.key
        assert len(authors(entry)) == len([a for a in paper.authors if name(a)]), entry.key

    records = rispy.loads(export_references(made, "ris").decode())
    assert len(records) == len(real_papers)
    for record in records:
        paper = by_key[record["id"]]
        assert record["title"] == one_line(paper.title) and record.get("doi") == paper.doi, record["id"]
        assert len(record.get("authors", [])) == len([a for a in paper.authors if name(a)]), record["id"]

    items = json.loads(export_references(made, "csl-json"))
    assert len(items) == len(real_papers)
    for item in items:
        paper = by_key[item["id"]]
        assert item["title"] == paper.title and item.get("DOI") == paper.doi, item["id"]
        assert len(item.get("author", [])) == len([a for a in paper.authors if name(a)]), item["id"]
