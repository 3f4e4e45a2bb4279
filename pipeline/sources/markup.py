"""Turning the markup scholarly APIs return (JATS, HTML, LaTeX-ish titles) into plain text."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from xml.etree.ElementTree import Element

from defusedxml import ElementTree

from contracts import Section
from pipeline.sources.base import FullText

_DOI_PREFIX = re.compile(r"^(?:https?://(?:dx\.)?doi\.org/|doi:)", re.I)

#: elements that end a line of ``plain`` text (matched without a ``jats:`` or other prefix); all others are inline
_LINE_BLOCKS = frozenset(
    {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "title", "sec", "li", "ul", "ol", "br", "tr", "table"}
    | {"abstract", "list", "list-item", "caption", "label", "disp-quote", "boxed-text", "fig", "table-wrap"}
)
#: table cells: a space between them, so the words of two cells never meet
_CELLS = frozenset({"td", "th"})
#: JATS elements that start a paragraph of their own when met inside a body's flow of text
_JATS_BLOCKS = frozenset({"p", "list", "list-item", "disp-quote", "boxed-text", "def-list", "def-item", "statement"})
#: elements whose text is kept apart from its neighbours' by a space when a caption or cell is read as one line
_SPACED = _LINE_BLOCKS | _CELLS | _JATS_BLOCKS


def plain(fragment: str | None) -> str:
    """Text of an HTML or JATS fragment (``<jats:p>…</jats:p>``): each heading and paragraph on a line of its own
    (joined with ``\\n``), inline markup (``H<sub>2</sub>O``) adding no space, entities decoded once, whitespace
    within a line collapsed. A ``<`` that starts no tag ("p < .001") is text."""
    if not fragment:
        return ""
    parser = _PlainParser()
    parser.feed(fragment)
    parser.close()
    return "\n".join(parser.lines())


class _PlainParser(HTMLParser):
    """Collects the text of a fragment as lines, ending a line at each block element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._lines: list[str] = []
        self._line: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._boundary(tag)

    def handle_endtag(self, tag: str) -> None:
        self._boundary(tag)

    def handle_data(self, data: str) -> None:
        self._line.append(data)

    def lines(self) -> list[str]:
        """The lines read so far, none empty."""
        self._end_line()
        return self._lines

    def _boundary(self, tag: str) -> None:
        name = tag.rpartition(":")[2]
        if name in _LINE_BLOCKS:
            self._end_line()
        elif name in _CELLS:
            self._line.append(" ")

    def _end_line(self) -> None:
        line = " ".join("".join(self._line).split())
        self._line = []
        if line:
            self._lines.append(line)


def normalise_doi(doi: str | None) -> str | None:
    """``10.1234/abc`` in lower case, from any of the ways APIs write a DOI (URL, ``doi:``)."""
    if not doi:
        return None
    doi = _DOI_PREFIX.sub("", doi.strip()).lower()
    return doi if doi.startswith("10.") else None


def jats_text(xml: bytes, limit: int = 300_000) -> FullText:
    """The body of a JATS article as paragraphs joined with a blank line, each section title a paragraph of its own
    and a ``Section`` at its offset; tables as a caption line and one line per row (cells joined by `` | ``),
    figure captions as paragraphs. Cut at the last paragraph that ends within ``limit`` characters (sections after
    the cut dropped); ``pages`` stays empty and ``origin`` is left to the caller.

    Raises ``SyntaxError`` (``ParseError``) or ``ValueError`` for a body that is not safe, well-formed XML.
    """
    root = ElementTree.fromstring(xml)
    body = next((e for e in root.iter() if _local(e) == "body"), None)
    if body is None:
        return FullText(text="")
    writer = _Writer()
    writer.flow(body)
    writer.end_paragraph()
    return writer.full_text(limit)


class _Writer:
    """Paragraphs of a JATS body in document order, and which of them are section headings."""

    def __init__(self) -> None:
        self.paragraphs: list[str] = []
        self.headings: set[int] = set()
        self._parts: list[str] = []

    def flow(self, element: Element) -> None:
        """The content of ``element``: inline children join the current paragraph, block children start their own."""
        self._parts.append(element.text or "")
        title = next((c for c in element if _local(c) == "title"), None) if _local(element) == "sec" else None
        for child in element:
            name = _local(child)
            if child is title:
                label = next((_text(c) for c in element if _local(c) == "label"), "")
                self.paragraph(f"{label} {_text(child)}", heading=True)
            elif name == "label" and title is not None:
                pass  # written before the section's title
            elif name == "table-wrap":
                self.paragraph("\n".join(_table_lines(child)))
            elif name == "fig":
                self.paragraph(_caption(child))
            elif name in _JATS_BLOCKS or name in {"sec", "title"}:
                self.end_paragraph()
                self.flow(child)
                self.end_paragraph()
            else:
                self.flow(child)
            self._parts.append(child.tail or "")

    def paragraph(self, text: str, *, heading: bool = False) -> None:
        """End the current paragraph and add ``text`` (whitespace collapsed on each line) as the next one."""
        self.end_paragraph()
        text = "\n".join(line for line in (" ".join(raw.split()) for raw in text.splitlines()) if line)
        if text:
            if heading:
                self.headings.add(len(self.paragraphs))
            self.paragraphs.append(text)

    def end_paragraph(self) -> None:
        """Add the inline text gathered since the last block, if any, as a paragraph."""
        text = " ".join("".join(self._parts).split())
        self._parts = []
        if text:
            self.paragraphs.append(text)

    def full_text(self, limit: int) -> FullText:
        """The paragraphs that fit in ``limit`` characters (or the first one cut, when even it does not fit)."""
        kept: list[str] = []
        sections: list[Section] = []
        start = 0
        for i, text in enumerate(self.paragraphs):
            if start + len(text) > limit:
                break
            if i in self.headings:
                sections.append(Section(heading=text, start=start))
            kept.append(text)
            start += len(text) + 2
        if not kept and self.paragraphs:
            return FullText(text=self.paragraphs[0][:limit])
        return FullText(text="\n\n".join(kept), sections=sections)


def _table_lines(table_wrap: Element) -> list[str]:
    """A table's label and caption as one line, then each row as a line of its cells joined by `` | ``, then its
    footnotes."""
    rows = [
        " | ".join(_text(cell) for cell in row if _local(cell) in _CELLS)
        for row in table_wrap.iter()
        if _local(row) == "tr"
    ]
    foot = [_text(e) for e in table_wrap.iter() if _local(e) == "table-wrap-foot"]
    return [_caption(table_wrap), *rows, *foot]


def _caption(element: Element) -> str:
    """The label and caption of a figure or table ("Table 2 Cohort. Ages at diagnosis")."""
    return " ".join(_text(c) for c in element if _local(c) in {"label", "caption"})


def _text(element: Element) -> str:
    """All the text of ``element``, whitespace collapsed; inline markup adds no space, blocks (title, p) do."""
    return " ".join(_raw(element).split())


def _raw(element: Element) -> str:
    """The text of ``element`` as written, a space around each block child."""
    parts = [element.text or ""]
    for child in element:
        space = " " if _local(child) in _SPACED else ""
        parts += [space, _raw(child), space, child.tail or ""]
    return "".join(parts)


def _local(element: Element) -> str:
    """An element's name without its namespace."""
    tag = element.tag
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""
