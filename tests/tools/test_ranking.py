"""Ranking by meaning, offline: the real embedding model and tokenizer, the word index in
moto. Finds captions that say it in other words, best first."""

import boto3
import numpy as np
import pytest
from moto import mock_aws

from captioner.search import IndexSearch, SearchQuery
from captioner.store import CaptionReader, CaptionStore, ObjectRef, Result, Status, TagStatus
from captioner_tools.local.template import table_definition
from captioner_tools.search import ranking
from captioner_tools.search.embedding import embedder
from captioner_tools.search.tokenizer import WordPiece, normalize, pre_tokenize

CAPTIONS = {
    "cat.jpg": ("A photo of an Egyptian cat or a tiger cat.",
                [{"label": "tabby, tabby cat", "score": 0.4}, {"label": "Egyptian cat", "score": 0.3}]),
    "kitten.jpg": ("A photo of a kitten asleep.", None),
    "coffee.jpg": ("A photo of an espresso.", [{"label": "espresso", "score": 0.9}]),
    "dog.jpg": ("A photo of a dog on a beach.", None),
    "rocket.jpg": ("A photo of a missile.", [{"label": "missile", "score": 0.5}]),
}  # fmt: skip
# a small vocabulary keeps the test fast; the real one has some 4,800 words
WORDS = ["cat", "kitten", "feline", "kitty", "tabby", "dog", "puppy", "espresso", "coffee",
         "cup", "missile", "rocket", "beach", "sea", "car", "person", "asleep", "sleeping"]  # fmt: skip


@pytest.fixture(scope="module")
def model():
    return embedder()


@pytest.fixture
def search(aws_env):
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(TableName="t", **table_definition())
        store = CaptionStore("t", ddb)
        for key, (text, labels) in CAPTIONS.items():
            claim = store.claim(ObjectRef("b", key, "v1", "e", 5, None), 60)
            store.save_result(claim, Result(Status.CAPTIONED, caption=text, labels=labels))
            store.save_tag(claim, TagStatus.WRITTEN, text, None)
        yield IndexSearch(CaptionReader("t", ddb))


def ranked(search, model, text, **kw):
    vocab = ranking.Vocabulary.embed(WORDS, model)
    page = ranking.rank_by_meaning(search, SearchQuery(text, **kw), vocab=vocab, model=model)
    return [(r["key"], r["score"]) for r in page.rows]


def test_meaning_finds_a_kitten_for_tabby_cat_and_ranks_the_cats_first(search, model):
    found = ranked(search, model, "tabby cat")
    keys = [k for k, _ in found]
    assert keys[:2] == ["cat.jpg", "kitten.jpg"]  # the word index alone finds only cat.jpg
    assert [r["key"] for r in search.find(SearchQuery("tabby cat")).rows] == ["cat.jpg"]
    assert "coffee.jpg" not in keys and "rocket.jpg" not in keys
    scores = [s for _, s in found]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)


def test_meaning_finds_cats_for_kitten_and_coffee_for_espresso(search, model):
    assert [k for k, _ in ranked(search, model, "kitten")][:2] == ["kitten.jpg", "cat.jpg"]
    assert [k for k, _ in ranked(search, model, "coffee")] == ["coffee.jpg"]
    assert ranked(search, model, "kitten", status="FAILED") == []


def test_vectors_are_unit_length_and_similar_texts_are_close(model):
    vectors = model.embed(["a kitten", "a small cat", "a rocket launch"])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_the_vocabulary_is_embedded_once_and_then_read_from_the_cache(model, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    notes = []
    first = ranking.cached_vocabulary(model, WORDS, notes.append)
    assert len(notes) == 1 and list(tmp_path.glob("captioner/vocabulary-*.npy"))
    second = ranking.cached_vocabulary(model, WORDS, notes.append)
    assert len(notes) == 1 and np.allclose(first.vectors, second.vectors, atol=2e-3)


def test_the_vocabulary_holds_the_local_providers_words_and_common_english():
    words = ranking.vocabulary_words()
    assert {"tabby", "espresso", "kitten", "cat", "dog", "car"} <= set(words)
    assert not {"the", "of", "photo"} & set(words)
    assert 15_000 < len(words) < 30_000


# The tokenizer gives Hugging Face tokenizers' ids for this file (ids taken from
# `tokenizers` 0.23.3 once; MODEL.md records the comparison on 4,002 texts).
GOLDEN = {
    "A photo of an Egyptian cat.": [101, 1037, 6302, 1997, 2019, 6811, 4937, 1012, 102],
    "Café “naïve” 中文 x—y": [101, 7668, 1523, 15743, 1524, 1746, 1861, 1060, 1517, 1061, 102],
}


def test_the_pure_python_tokenizer_matches_the_reference_ids():
    tok = WordPiece.from_file()
    for text, ids in GOLDEN.items():
        assert tok.encode(text) == ids, (text, tok.encode(text))
    assert tok.encode("x" * 150) == [101, 100, 102]
    assert len(tok.encode("word " * 300)) == 128
    assert pre_tokenize(normalize("Don't STOP!")) == ["don", "'", "t", "stop", "!"]


def test_the_model_file_is_checked_before_it_is_loaded(tmp_path):
    from captioner_tools.errors import CliError
    from captioner_tools.search.embedding import Embedder

    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not the model")
    with pytest.raises(CliError, match="sha256"):
        Embedder(fake, WordPiece.from_file())
