"""pipeline.extractors.chunks: long texts split into overlapping chunks."""

import itertools

from pipeline.extractors.chunks import split, split_by_section, tokens


def test_long_texts_split_into_overlapping_chunks_that_cover_every_word():
    text = " ".join(f"w{i}" for i in range(3000))
    chunks = split(text, max_tokens=1000, overlap=100)
    assert len(chunks) > 1 and split("short text", 1000, 100) == ["short text"]
    words = [chunk.split() for chunk in chunks]
    assert words[0][0] == "w0" and words[-1][-1] == "w2999"
    for before, after in itertools.pairwise(words):
        assert before[-1] in after  # consecutive chunks overlap


def test_full_texts_split_at_section_headings_and_long_sections_by_tokens():
    intro = "1 Introduction\n" + "greenhouse water " * 40 + "\n"
    methods = "2 Methods\n" + "ozone was dosed " * 40 + "\n"
    results = "3 Results\n" + "pythium counts fell " * 400 + "\n"
    text = intro + methods + results
    starts = [0, len(intro), len(intro) + len(methods)]
    chunks = split_by_section(text, starts, max_tokens=300, overlap=20)
    assert chunks[0] == intro + methods  # two short sections fit one chunk, cut at a heading
    assert chunks[1].startswith("3 Results") and len(chunks) > 2  # the long one is split by tokens
    assert all(tokens(chunk) <= 300 for chunk in chunks)
    assert split_by_section(text, [], max_tokens=10_000, overlap=20) == [text]
