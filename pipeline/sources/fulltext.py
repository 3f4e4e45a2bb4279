"""Full text for the documents the search keeps: open-access PDFs and JATS, downloaded politely and safely.

Where from, best first: a source's own full text (Europe PMC's JATS for its open-access articles), then every
open-access copy the sources named (OpenAlex's ``best_oa_location``, Semantic Scholar's ``openAccessPdf``,
Crossref's text-mining links, Europe PMC's PDFs), then arXiv's PDF of a preprint. A download

- never goes to a loopback, link-local, private or otherwise non-public address, however it is redirected,
  unless its host is allowed in ``LITMINER_FULL_TEXT_HOSTS`` (the tests' loopback stand-ins);
- keeps each host's rate and concurrency limits across every worker (through Redis, as the sources do);
- stops at ``LITMINER_FULL_TEXT_MAX_BYTES`` and at the HTTP timeout, and must be what it says: a PDF starts
  with ``%PDF-``, JATS is XML (a publisher's HTML landing page is neither);
- is cached by URL and by content hash, so a reprocess or another job reads it again without downloading.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from collections.abc import Collection, Sequence
from urllib.parse import urljoin

import msgspec

from contracts import Document
from pipeline.addresses import AddressRefused, check_url_async
from pipeline.errors import SourceError
from pipeline.sources.base import FullText, FullTextSource, Source
from pipeline.sources.http import Limits, SourceHttp
from pipeline.sources.markup import jats_text
from pipeline.sources.pdf import read_pdf

log = logging.getLogger(__name__)

NO_COPY = "no open-access copy"
#: the most text kept of one document (about 75 pages); the rest is cut at a page boundary
MAX_CHARS = 300_000
_HOST_LIMITS = Limits(per_second=2, concurrent=2)
#: hosts that publish stricter limits than the default
_KNOWN_LIMITS = {
    "arxiv.org": Limits(per_second=1 / 3, concurrent=1),
    "export.arxiv.org": Limits(per_second=1 / 3, concurrent=1),
}
_MAX_REDIRECTS = 5
_CACHE_URL, _CACHE_TEXT = "fulltext-url", "fulltext"
_encode = msgspec.json.encode
_decode = msgspec.json.Decoder(FullText).decode


class Refused(Exception):
    """A copy that cannot be used; the message is the reason reported ("not a PDF (text/html)")."""


class FullTextReport(msgspec.Struct, frozen=True, kw_only=True):
    """What fetching did: documents with full text, of how many, and why the others have none."""

    documents: list[Document]
    reasons: dict[str, int]

    @property
    def with_text(self) -> int:
        return sum(bool(d.full_text) for d in self.documents)


class Fetcher:
    """Downloads and reads the full text of documents, within the limits above."""

    def __init__(self, http: SourceHttp, *, max_bytes: int, allowed_hosts: Collection[str] = ()) -> None:
        self.http = http
        self.max_bytes = max_bytes
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)

    async def add(self, documents: Sequence[Document], sources: Sequence[Source]) -> FullTextReport:
        """``documents``, each with the full text of its first copy that could be read, and the reasons for the rest."""
        fetchers = [s for s in sources if isinstance(s, FullTextSource)]
        results = await asyncio.gather(*(self._one(d, fetchers) for d in documents))
        reasons = Counter(reason for _, reason in results if reason)
        kept = [d if text is None else _with(d, text) for d, (text, _) in zip(documents, results, strict=True)]
        return FullTextReport(documents=kept, reasons=dict(reasons))

    async def _one(self, document: Document, fetchers: Sequence[FullTextSource]) -> tuple[FullText | None, str]:
        """The document's full text, or None and why."""
        if document.full_text:
            return None, ""
        reason = NO_COPY
        for fetcher in fetchers:
            if any(p.source == fetcher.name for p in document.provenance):
                try:
                    text = await fetcher.full_text(document, self.http)
                except SourceError as exc:
                    reason = exc.reason
                    continue
                if text is not None and text.text.strip():
                    return text, ""
        for url in copies(document):
            try:
                return await self.read(url), ""
            except Refused as exc:
                reason = str(exc)
                log.info("full text of %s from %s: %s", document.id, url, reason)
        return None, reason

    async def read(self, url: str) -> FullText:
        """The text of the copy at ``url``: from the cache, else downloaded and read. Raises ``Refused``."""
        url_digest = hashlib.sha256(url.encode()).hexdigest()[:32]
        known = await self.http.state.cached(_CACHE_URL, url_digest)
        if known is not None and (text := await self.http.state.cached(_CACHE_TEXT, known.decode())) is not None:
            return _decode(text)
        body, content_type = await self._download(url)
        content_hash = hashlib.sha256(body).hexdigest()
        cached = await self.http.state.cached(_CACHE_TEXT, content_hash)
        if cached is not None:
            full_text = _decode(cached)
        else:
            full_text = await asyncio.to_thread(_parse, body, content_type, url)
            await self.http.state.cache(_CACHE_TEXT, content_hash, _encode(full_text))
        await self.http.state.cache(_CACHE_URL, url_digest, content_hash.encode())
        return full_text

    async def _download(self, url: str) -> tuple[bytes, str]:
        """The body and content type at ``url``, redirects followed one checked hop at a time."""
        for _ in range(_MAX_REDIRECTS + 1):
            host = await self._check(url)
            limits = _KNOWN_LIMITS.get(host, _HOST_LIMITS)
            try:
                answer = await self.http.download(f"host:{host}", limits, url, max_bytes=self.max_bytes)
            except SourceError as exc:
                raise Refused(exc.reason) from None
            if answer.status != 200:
                url = urljoin(url, answer.headers.get("Location", ""))
                continue
            return answer.body, answer.headers.get("Content-Type", "").split(";")[0].strip().lower()
        raise Refused(f"more than {_MAX_REDIRECTS} redirects")

    async def _check(self, url: str) -> str:
        """The URL's host, once it is known to be public (or allowed); raises ``Refused`` otherwise."""
        try:
            return await check_url_async(url, self.allowed_hosts)
        except AddressRefused as exc:
            raise Refused(str(exc)) from None


def copies(document: Document) -> list[str]:
    """The open-access copies of ``document`` to try, best first: the sources' links, then arXiv's PDF."""
    urls = list(dict.fromkeys(document.pdf_urls))
    if document.arxiv_id and not any("arxiv.org/pdf/" in url for url in urls):
        urls.append(f"https://arxiv.org/pdf/{document.arxiv_id}")
    return urls


def _parse(body: bytes, content_type: str, url: str) -> FullText:
    """The text of a downloaded PDF or JATS file; raises ``Refused`` for anything else."""
    if b"%PDF-" in body[:1024]:
        try:
            pdf = read_pdf(body, name=url.rsplit("/", 1)[-1])
        except ValueError as exc:
            raise Refused(f"unreadable PDF ({exc})") from None
        return _capped(FullText(text=pdf.text, pages=pdf.pages, sections=pdf.sections, origin=url))
    if content_type.endswith("xml") or body[:1024].lstrip().startswith(b"<?xml"):
        try:
            return _capped(msgspec.structs.replace(jats_text(body), origin=url))
        except (SyntaxError, ValueError) as exc:
            raise Refused(f"unreadable XML ({' '.join(str(exc).split())[:80]})") from None
    raise Refused(f"not a PDF ({content_type or 'no content type'})")


def _capped(text: FullText) -> FullText:
    """``text`` cut to ``MAX_CHARS`` at the last page (or section) boundary before it."""
    if len(text.text) <= MAX_CHARS:
        return text
    cut = max((p for p in text.pages if 0 < p <= MAX_CHARS), default=MAX_CHARS)
    return msgspec.structs.replace(
        text,
        text=text.text[:cut],
        pages=[p for p in text.pages if p < cut],
        sections=[s for s in text.sections if s.start < cut],
    )


def _with(document: Document, text: FullText) -> Document:
    return msgspec.structs.replace(
        document, full_text=text.text, pages=text.pages, sections=text.sections, full_text_from=text.origin
    )
