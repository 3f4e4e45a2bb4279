"""pipeline.extractors.chunks: long texts split into overlapping chunks."""

import itertools

from pipeline.extractors.chunks import split


def test_long_texts_split_into_overlapping_chunks_that_cover_every_word():
    text = " ".join(f"w{i}" for i in range(3000))
    chunks = split(text, max_tokens=1000, overlap=100)
    assert len(chunks) > 1 and split("short text", 1000, 100) == ["short text"]
    words = [chunk.split() for chunk in chunks]
    assert words[0][0] == "w0" and words[-1][-1] == "w2999"
    for before, after in itertools.pairwise(words):
        assert before[-1] in after  # consecutive chunks overlap
