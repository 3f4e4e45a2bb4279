"""The Source interface: something that answers a query with ranked documents."""

from __future__ import annotations

from typing import Protocol

from contracts import Document


class Source(Protocol):
    """A searchable collection of scholarly records."""

    name: str

    def search(self, query: str, limit: int) -> list[Document]:
        """Up to ``limit`` documents for ``query``, best first."""
        ...


class SourceError(RuntimeError):
    """A source failed; transient unless stated otherwise."""
