import json
from pathlib import Path

from pipeline.sources.local_corpus import LocalCorpus, sample_corpus_path
from pipeline.stages import search


def write_corpus(path: Path, titles: list[str]) -> None:
    lines = ["# synthetic test corpus"]
    lines += [json.dumps({"id": f"r{i}", "title": t, "abstract": f"About {t.lower()}."}) for i, t in enumerate(titles)]
    path.write_text("\n".join(lines) + "\n")


def test_index_is_built_once_and_rebuilt_when_the_corpus_changes(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    write_corpus(corpus, ["Ozonation of irrigation water", "Drip irrigation scheduling"])
    index_dir = tmp_path / "index"
    first = LocalCorpus(corpus, index_dir)
    assert [d.id for d in first.search("ozonation", 5)] == ["r0"]
    built = first.index_path()
    built_at = built.stat().st_mtime_ns

    again = LocalCorpus(corpus, index_dir)  # another process would start the same way
    assert again.index_path() == built and built.stat().st_mtime_ns == built_at

    write_corpus(corpus, ["Ozonation of irrigation water", "Chlorination of wash water", "UV disinfection"])
    changed = LocalCorpus(corpus, index_dir).index_path()
    assert changed != built
    assert [d.id for d in LocalCorpus(corpus, index_dir).search("chlorination", 5)] == ["r1"]


def test_seed_query_finds_treatment_technology_papers_first(tmp_path):
    corpus = LocalCorpus(sample_corpus_path(), tmp_path)
    documents = search.run("water treatment technologies used in specialty crop production", [corpus], 20)
    assert len(documents) == 20
    assert [d.rank for d in documents] == list(range(1, 21))
    top = " ".join(d.title.lower() for d in documents[:5])
    assert sum(word in top for word in ("treatment", "osmosis", "wetlands", "chlorination", "filtration")) >= 3


def test_query_of_only_stop_words_finds_nothing(tmp_path):
    assert LocalCorpus(sample_corpus_path(), tmp_path).search("the of and", 5) == []
