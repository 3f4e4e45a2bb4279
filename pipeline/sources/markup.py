"""Turning the markup scholarly APIs return (JATS, HTML, LaTeX-ish titles) into plain text."""

from __future__ import annotations

import html
import re

from defusedxml import ElementTree

_TAG = re.compile(r"<[^>]+>")
_DOI_PREFIX = re.compile(r"^(?:https?://(?:dx\.)?doi\.org/|doi:)", re.I)
_JATS_NS = re.compile(r"\{[^}]*\}")


def plain(fragment: str | None) -> str:
    """Text of an HTML or JATS fragment (``<jats:p>…</jats:p>``), entities decoded, whitespace collapsed."""
    if not fragment:
        return ""
    return " ".join(html.unescape(_TAG.sub(" ", fragment)).split())


def normalise_doi(doi: str | None) -> str | None:
    """``10.1234/abc`` in lower case, from any of the ways APIs write a DOI (URL, ``doi:``)."""
    if not doi:
        return None
    doi = _DOI_PREFIX.sub("", doi.strip()).lower()
    return doi if doi.startswith("10.") else None


def jats_body(xml: bytes, limit: int = 200_000) -> str:
    """The paragraphs of a JATS article's body (section titles included), as plain text.

    Raises ``SyntaxError`` (``ParseError``) or ``ValueError`` for a body that is not safe, well-formed XML.
    """
    root = ElementTree.fromstring(xml)
    body = next((e for e in root.iter() if _JATS_NS.sub("", e.tag) == "body"), None)
    if body is None:
        return ""
    parts = [
        " ".join("".join(element.itertext()).split())
        for element in body.iter()
        if _JATS_NS.sub("", element.tag) in {"p", "title"}
    ]
    return "\n\n".join(p for p in parts if p)[:limit]
