"""BERT's WordPiece tokenizer in pure Python, from the model's own ``tokenizer.json``.

all-MiniLM-L6-v2's tokenizer: BertNormalizer (clean text, spaces around CJK characters,
lower case, accents stripped), BertPreTokenizer (whitespace, and every punctuation
character on its own), WordPiece (greedy longest match, ``##`` continuations, ``[UNK]`` for
words over 100 characters or with no match), then ``[CLS] … [SEP]``, truncated to 128.
It gives the same ids as Hugging Face's ``tokenizers`` for this file (MODEL.md: 4,002
texts compared, captions and unicode edge cases) without its native wheel and the
huggingface_hub it brings (12 MB and more); a caption takes about 0.2 ms.
"""

from __future__ import annotations

import json
import unicodedata
from functools import lru_cache
from pathlib import Path

TOKENIZER_FILE = Path(__file__).with_name("tokenizer.json")


class WordPiece:
    def __init__(self, vocab: dict[str, int], max_length: int = 128) -> None:
        self.vocab = vocab
        self.max_length = max_length
        self.unk, self.cls, self.sep = vocab["[UNK]"], vocab["[CLS]"], vocab["[SEP]"]
        self.pad = vocab["[PAD]"]

    @classmethod
    def from_file(cls, path: Path = TOKENIZER_FILE) -> WordPiece:
        spec = json.loads(path.read_text(encoding="utf-8"))
        model = spec["model"]
        if model["type"] != "WordPiece" or spec["normalizer"]["type"] != "BertNormalizer":
            raise ValueError(f"{path} is not a BERT WordPiece tokenizer")
        return cls(model["vocab"], int((spec.get("truncation") or {}).get("max_length", 128)))

    def encode(self, text: str) -> list[int]:
        """[CLS] pieces [SEP], at most ``max_length`` ids."""
        ids: list[int] = []
        room = self.max_length - 2
        for word in pre_tokenize(normalize(text)):
            ids += self._pieces(word)
            if len(ids) >= room:
                break
        return [self.cls, *ids[:room], self.sep]

    def _pieces(self, word: str) -> list[int]:
        if len(word) > 100:
            return [self.unk]
        pieces: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    pieces.append(self.vocab[piece])
                    break
                end -= 1
            else:
                return [self.unk]
            start = end
        return pieces


def normalize(text: str) -> str:
    """BertNormalizer(clean_text, handle_chinese_chars, lowercase, strip_accents=None→True)."""
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_whitespace(ch):
            out.append(" ")
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    lowered = "".join(out).lower()
    return "".join(
        c for c in unicodedata.normalize("NFD", lowered) if unicodedata.category(c) != "Mn"
    )


def pre_tokenize(text: str) -> list[str]:
    """Split on whitespace, and make every punctuation character a word of its own."""
    words: list[str] = []
    for chunk in text.split():
        current = ""
        for ch in chunk:
            if _is_punctuation(ch):
                if current:
                    words.append(current)
                words.append(ch)
                current = ""
            else:
                current += ch
        if current:
            words.append(current)
    return words


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in ("Cc", "Cf", "Cn", "Co", "Cs")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


@lru_cache(maxsize=1)
def default() -> WordPiece:
    return WordPiece.from_file()
