"""Splitting long texts into overlapping chunks by tokens (tiktoken when installed, else a word estimate)."""

from __future__ import annotations

import importlib
import itertools
import json
import logging
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Protocol, cast

log = logging.getLogger(__name__)

#: English prose averages about three words per four tokens in OpenAI's tokenisers
_WORDS_PER_TOKEN = 0.75
#: a word and the whitespace after it (leading whitespace counts as a word of its own)
_WORD = re.compile(r"\S+\s*|\s+")


class _Encoding(Protocol):
    def encode(self, text: str) -> list[int]: ...
    def decode(self, tokens: list[int]) -> str: ...


@lru_cache(maxsize=1)
def _encoding() -> _Encoding | None:
    """tiktoken's o200k_base, or None when tiktoken or its (downloaded) vocabulary is unavailable."""
    try:
        tiktoken = importlib.import_module("tiktoken")
        return cast(_Encoding, tiktoken.get_encoding("o200k_base"))
    except Exception as exc:  # not installed, or no network to fetch the vocabulary: estimate instead
        log.info("token counts are estimated from words (tiktoken unavailable: %s)", exc)
        return None


def split(text: str, max_tokens: int, overlap: int) -> list[str]:
    """``text`` in chunks of at most ``max_tokens`` tokens, each repeating the last ``overlap`` of the previous."""
    step = max(1, max_tokens - overlap)
    encoding = _encoding()
    if encoding is not None:
        tokens = encoding.encode(text)
        if len(tokens) <= max_tokens:
            return [text]
        return [encoding.decode(tokens[i : i + max_tokens]) for i in range(0, len(tokens) - overlap, step)]
    words = _WORD.findall(text)  # each word with the whitespace after it: joined, they give the text back
    size, stride = int(max_tokens * _WORDS_PER_TOKEN), max(1, int(step * _WORDS_PER_TOKEN))
    if len(words) <= size:
        return [text]
    return ["".join(words[i : i + size]) for i in range(0, len(words) - (size - stride), stride)]


def tokens(text: str) -> int:
    """How many tokens ``text`` is (estimated from its words without tiktoken)."""
    encoding = _encoding()
    if encoding is not None:
        return len(encoding.encode(text))
    return round(len(_WORD.findall(text)) / _WORDS_PER_TOKEN)  # the words as split() counts them


def split_by_section(text: str, starts: list[int], max_tokens: int, overlap: int) -> list[str]:
    """``text`` in chunks of whole sections (``starts``: where each begins) up to ``max_tokens`` tokens each;
    a section longer than that is split by ``split``. Each chunk starts at a section's heading."""
    bounds = sorted({0, len(text), *(s for s in starts if 0 < s < len(text))})
    chunks: list[str] = []
    current = ""
    for start, end in itertools.pairwise(bounds):
        section = text[start:end]
        if current and tokens(current + section) <= max_tokens:
            current += section
            continue
        if current:
            chunks.append(current)
        current = section
        if tokens(section) > max_tokens:
            chunks += split(section, max_tokens, overlap)
            current = ""
    if current.strip():
        chunks.append(current)
    return [chunk for chunk in chunks if chunk.strip()]


#: tokens OpenAI's chat format adds per message (role and separators) and once per reply (its priming)
_PER_MESSAGE, _PER_REPLY = 4, 3


def request_tokens(messages: Sequence[Mapping[str, object]], response_format: Mapping[str, object] | None) -> int:
    """The prompt tokens a chat request sends: its messages' text, the chat format's overhead, and the reply's
    JSON schema (which the provider counts as prompt). Estimated like ``tokens`` without tiktoken."""
    text = sum(tokens(str(m.get("content") or "")) + _PER_MESSAGE for m in messages)
    schema = tokens(json.dumps(response_format, separators=(",", ":"))) if response_format else 0
    return text + schema + _PER_REPLY
