"""``captioner search --meaning``: candidates from the word index, ranked by meaning.

The word index only knows words. To find "A photo of a kitten." for "tabby cat", each query
word is widened to its nearest words in a vocabulary (cosine of their sentence vectors ≥
NEIGHBOUR_MIN: cat → kitten, feline), the newest postings of all of them are read (at most
CANDIDATES in all), their rows checked as for any search, and the captions ranked
by the cosine of their vector with the query's; those under SCORE_MIN are dropped.

Where the vectors live: nowhere in AWS. The query, the candidates' captions and the
vocabulary are embedded here, in the command line tool; the vocabulary's vectors (the
local provider's ImageNet words and the COMMON_WORDS most frequent English words of the
model's own vocabulary) are computed once and cached under ``$XDG_CACHE_HOME/captioner``.
A search costs the postings of its words and their neighbours and one row read per
candidate, whatever the size of the table; the model never runs in the function.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from captioner import index
from captioner.providers.local import LABELS_FILE
from captioner.search import IndexSearch, Posting, SearchPage, SearchQuery, matches, query_words
from captioner_tools.search.embedding import DIMENSIONS, MODEL_SHA256, Embedder, embedder
from captioner_tools.search.tokenizer import default as tokenizer

COMMON_WORDS = 25_000  # whole words of the model's vocabulary, most frequent first (all of them)
NEIGHBOURS = 10  # words each query word is widened to, at most
NEIGHBOUR_MIN = 0.5  # cosine of two words' vectors (cat~kitten 0.79, coffee~espresso 0.56)
CANDIDATES = 300  # rows read and embedded per search, at most (split between the words)
SCORE_MIN = 0.25  # cosine of the query and a caption ("tabby cat" ~ "A photo of a kitten." 0.42)


@dataclass(frozen=True)
class Vocabulary:
    words: list[str]
    vectors: np.ndarray  # unit rows, one per word

    @classmethod
    def embed(cls, words: list[str], model: Embedder) -> Vocabulary:
        return cls(words, model.embed(words))

    def neighbours(self, word: str, vector: np.ndarray) -> list[str]:
        """The nearest vocabulary words, nearest first (the word itself excluded)."""
        scores = self.vectors @ vector
        best = np.argsort(-scores)[: NEIGHBOURS + 1]
        return [
            self.words[i] for i in best if scores[i] >= NEIGHBOUR_MIN and self.words[i] != word
        ][:NEIGHBOURS]


def vocabulary_words() -> list[str]:
    """Index words the query may be widened to: the local provider's ImageNet class words
    and the most frequent English words of the tokenizer (its ids follow frequency)."""
    labels = json.loads(LABELS_FILE.read_text(encoding="utf-8"))
    found: dict[str, None] = dict.fromkeys(index.words_of(" ".join(labels)))
    pieces = sorted(tokenizer().vocab.items(), key=lambda kv: kv[1])
    common = (w for w, i in pieces if i >= 1996 and w.isascii() and w.isalpha() and len(w) > 2)
    for word in itertools.islice(common, COMMON_WORDS):
        normal = index.normalise(word)
        if normal:
            found[normal] = None
    return list(found)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "captioner"


def cached_vocabulary(
    model: Embedder, words: list[str], notify: Callable[[str], None] | None = None
) -> Vocabulary:
    """The vocabulary's vectors, from the cache when the words and the model are the same."""
    digest = hashlib.sha256(("\n".join(words) + MODEL_SHA256).encode()).hexdigest()[:16]
    path = cache_dir() / f"vocabulary-{digest}.npy"
    if path.exists():
        vectors = np.load(path)
        if vectors.shape == (len(words), DIMENSIONS):
            return Vocabulary(words, vectors.astype(np.float32))
    if notify:
        notify(
            f"embedding the search vocabulary ({len(words)} words, once; cached in {path.parent})"
        )
    vocab = Vocabulary.embed(words, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vocab.vectors.astype(np.float16))
    return vocab


def default_vocabulary(notify: Callable[[str], None] | None = None) -> Vocabulary:
    return cached_vocabulary(embedder(), vocabulary_words(), notify)


def widen(words: list[str], vocab: Vocabulary, model: Embedder) -> list[str]:
    """The words, then their nearest vocabulary words (all in the index's form)."""
    vectors = model.embed(words)
    found: dict[str, None] = dict.fromkeys(words)
    for word, vector in zip(words, vectors, strict=True):
        found.update(dict.fromkeys(vocab.neighbours(word, vector)))
    return list(found)


def rank_by_meaning(
    search: IndexSearch,
    query: SearchQuery,
    *,
    vocab: Vocabulary | None = None,
    model: Embedder | None = None,
    notify: Callable[[str], None] | None = None,
) -> SearchPage:
    """The rows whose caption is closest in meaning to the query, best first, each with its
    ``score`` (cosine similarity, 0-1). One page: ``limit`` rows, no cursor."""
    model = model or embedder()
    vocab = vocab or default_vocabulary(notify)
    terms = widen(query_words(query.text), vocab, model)
    where = SearchQuery(query.text, bucket=query.bucket, prefix=query.prefix, limit=None)
    postings: dict[tuple[str, str], Posting] = {}
    for term in terms:  # the newest postings of each word, the query's own words first
        share = max((CANDIDATES - len(postings)) // max(len(terms) - terms.index(term), 1), 0)
        for posting in itertools.islice(search.postings(term, [], where), share):
            postings.setdefault((posting.bucket, posting.key), posting)
    rows = search.rows_at(list(postings))
    candidates = [row for obj, row in rows.items() if matches(row, postings[obj], [], query.status)]
    if not candidates:
        return SearchPage([], None)
    vectors = model.embed([query.text, *(str(r.get("caption", "")) for r in candidates)])
    scores = vectors[1:] @ vectors[0]
    ranked: list[dict[str, Any]] = []
    for i in np.argsort(-scores):
        if scores[i] < SCORE_MIN:
            break
        ranked.append({**candidates[i], "score": round(float(scores[i]), 3)})
    return SearchPage(ranked[: query.limit] if query.limit else ranked, None)
