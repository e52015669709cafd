"""What the offline describer saw, in words: people, pages of text, blur, then objects.

Pure logic over the measurements of ``local.py`` (no model is loaded here), so every rule is
unit-tested. The order of the rules is what a person looks at first:

1. a page of text (text boxes cover much of the image, in several lines): quote its first
   words if they read clearly. A sharp page that does not read is "handwriting or unclear
   text": the tuning set has printed pages with motion blur (which the sharpness measure
   misses) reading as badly as handwriting, so the two are not told apart. Big, clear
   text in one or two lines (a logo, a sign) is quoted as "an image of the text";
2. people (faces found): how many, plus a confident object ("a person and a tripod") or
   garment ("a person wearing a military uniform"), never a guess at gender or identity;
3. blur: "a very blurry photo" (the classifier is not trusted then) or "a blurry photo of";
4. otherwise the ImageNet classifier's words (``describe.describe``).

The thresholds were set on a tuning set of photos that is kept apart from the photos the
results are reported on (models/MODEL.md, ``tests/benchmarks/eval_local_captions.py``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from captioner.providers.base import Length
from captioner.providers.describe import (
    THRESHOLD,
    best_guesses,
    describe,
    merge_labels,
    with_article,
)

#: Text boxes must cover this share of the image, in at least ``PAGE_LINES`` lines, for
#: the image to be "a page of text" (tuning set: pages 0.15-0.44, photos at most 0.05).
PAGE_COVERAGE = 0.10
PAGE_LINES = 3
#: Mean per-character confidence at which a reading is quoted (tuning set: clean readings
#: 0.89-0.99, garbled ones 0.82 and below).
READABLE = 0.85
#: Variance of the Laplacian at 512 px (``sharpness.py``) under which a photo is blurry or
#: very blurry (tuning set: sharp photos 65 and up; Gaussian blur of 2 px at 512 px, 3-31;
#: of 3 px, 2-8).
BLURRY_BELOW = 40.0
VERY_BLURRY_BELOW = 10.0
#: Words quoted from a page, by caption length.
QUOTED_WORDS: dict[Length, int] = {"short": 0, "normal": 8, "long": 20}
_COUNTS = ("", "a person", "two people", "three people", "four people", "five people")

# ImageNet classes that, next to a face, are something the person wears.
_WORN = frozenset(
    {
        "academic gown",
        "apron",
        "bow tie",
        "bulletproof vest",
        "cardigan",
        "cloak",
        "cowboy hat",
        "crash helmet",
        "football helmet",
        "fur coat",
        "jersey",
        "kimono",
        "lab coat",
        "military uniform",
        "mortarboard",
        "poncho",
        "sombrero",
        "suit",
        "sunglasses",
        "sweatshirt",
        "trench coat",
        "vestment",
        "Windsor tie",
    }
)
# ImageNet classes that a face itself triggers (skin, hair, make-up): not worth saying
# next to "a person", and some would be a guess about gender.
_FACE_ITSELF = frozenset(
    {
        "bikini",
        "brassiere",
        "face powder",
        "hair spray",
        "lipstick",
        "maillot",
        "mask",
        "neck brace",
        "ski mask",
        "sunscreen",
        "swimming trunks",
        "tank suit",
        "wig",
    }
)


@dataclass(frozen=True)
class Scene:
    """Everything the offline describer measured about one image."""

    labels: Sequence[tuple[str, float]] = ()  # ImageNet classifier, top-k (raw or clean)
    faces: Sequence[float] = ()  # detector score of each face found
    text_coverage: float = 0.0  # share of the image covered by text boxes
    text_lines: int = 0  # text boxes found
    text_score: float = 0.0  # the text detector's mean confidence in its boxes
    text: Sequence[tuple[str, float]] = ()  # first lines read: (text, confidence)
    sharpness: float | None = None  # variance of the Laplacian; None if not measured

    @property
    def is_page(self) -> bool:
        return self.text_coverage >= PAGE_COVERAGE and self.text_lines >= PAGE_LINES

    @property
    def is_lettering(self) -> bool:
        """Big text in a line or two (a logo, a sign, a title card) that reads clearly."""
        return self.text_coverage >= PAGE_COVERAGE and self.readable and self.blur != "very"

    @property
    def is_handwriting(self) -> bool:
        """A sharp page that does not read: handwriting, or print too unclear to read."""
        return self.is_page and not self.blur and not self.readable

    @property
    def reading_confidence(self) -> float:
        chars = sum(len(text) for text, _ in self.text)
        return sum(len(t) * c for t, c in self.text) / chars if chars else 0.0

    @property
    def readable(self) -> bool:
        return bool(self.words) and self.reading_confidence >= READABLE

    @property
    def words(self) -> list[str]:
        return [word for text, _ in self.text for word in clean_text(text).split()]

    @property
    def blur(self) -> str:
        """ "very", "yes" or "" (sharp, or not measured)."""
        if self.sharpness is None or self.sharpness >= BLURRY_BELOW:
            return ""
        return "very" if self.sharpness < VERY_BLURRY_BELOW else "yes"


def describe_scene(scene: Scene, length: Length = "normal") -> str:
    """The caption: the first rule that applies (see the module docstring)."""
    if scene.is_page:
        return _page(scene, length)
    if scene.is_lettering:
        return _lettering(scene, length)
    if scene.faces:
        return _people(scene, length)
    if scene.blur:
        return _blurred(scene, length)
    sentence = describe(scene.labels, length)
    return _with_visible_text(sentence, scene) if length == "long" else sentence


def signal_labels(scene: Scene) -> list[tuple[str, float]]:
    """The new signals as labels, recorded in front of the classifier's: person, text,
    handwriting, blurry (each only when present; scores 0-1)."""
    labels = []
    if scene.faces:
        labels.append(("person", round(max(scene.faces), 4)))
    if scene.is_page or scene.readable:  # a stray box in a photo is not "text"
        labels.append(("text", round(scene.text_score, 4)))
    if scene.is_handwriting:
        labels.append(("handwriting", round(1 - scene.reading_confidence, 4)))
    if scene.blur:
        # 0.5 at the blurry threshold, towards 1 as the last edges vanish
        assert scene.sharpness is not None
        labels.append(("blurry", round(BLURRY_BELOW / (BLURRY_BELOW + scene.sharpness), 4)))
    return labels


def clean_text(text: str) -> str:
    """Text read from an image, safe to store and print: letters, digits, spaces and plain
    punctuation only (no control characters, no markup brackets), spaces collapsed."""
    out = []
    for ch in unicodedata.normalize("NFC", text):
        if unicodedata.category(ch)[0] in "LN" or ch in ".,:;!?'\"-()&/%+#@=*":
            out.append(ch)
        else:
            out.append(" ")
    return " ".join("".join(out).split())


def _page(scene: Scene, length: Length) -> str:
    if scene.is_handwriting:
        if length != "long":
            return "A page of handwriting or unclear text."
        return (
            f"A page of handwriting or unclear text (writing covers "
            f"{round(scene.text_coverage * 100)}% of the image; the text reader is "
            f"{round(scene.reading_confidence * 100)}% sure of its reading)."
        )
    if not scene.readable:  # and blurry: blur explains why it cannot be read
        blurry = "A very blurry photo of " if scene.blur == "very" else "A blurry photo of "
        return f"{blurry}a page of text."
    # It reads, so it is not "very" blurry, whatever the edges say.
    page = "A blurry photo of a page of text" if scene.blur else "A page of text"
    return f"{page}{_quote(scene, length, ' beginning')}."


def _lettering(scene: Scene, length: Length) -> str:
    quote = _quote(scene, length, "")
    return f"An image of the text{quote}." if quote else "An image of text."


def _quote(scene: Scene, length: Length, lead: str) -> str:
    """' beginning “Region-based segmentation Let us…”': the first words, by length."""
    limit = QUOTED_WORDS[length]
    words = scene.words
    if not limit or not words:
        return ""
    quoted = " ".join(words[:limit]) + ("…" if len(words) > limit else "")
    return f"{lead} “{quoted}”"


def _people(scene: Scene, length: Length) -> str:
    count = len(scene.faces)
    who = _COUNTS[count] if count < len(_COUNTS) else "a group of people"
    blurry = {"very": "A very blurry photo of ", "yes": "A blurry photo of "}.get(scene.blur, "")
    start = blurry or "A photo of "
    if length == "short" or scene.blur == "very":
        return f"{start}{who}."
    extra = _person_object(scene.labels)
    sentence = f"{start}{who}{extra}."
    return _with_visible_text(sentence, scene) if length == "long" else sentence


def _person_object(labels: Sequence[tuple[str, float]]) -> str:
    """ " wearing a suit", " and a tripod", or "" when the classifier is not confident."""
    for name, score in merge_labels(labels):
        if score < THRESHOLD:
            return ""
        if name in _FACE_ITSELF:
            continue
        return f" wearing {with_article(name)}" if name in _WORN else f" and {with_article(name)}"
    return ""


def _blurred(scene: Scene, length: Length) -> str:
    sentence = describe(scene.labels, length)
    # Mildly blurred: a confident classifier is still worth hearing. Very blurred: the
    # edges it relies on are gone (it calls a blurred clock "a bubble"), so no object.
    if scene.blur == "yes" and sentence.startswith("A photo of "):
        return "A blurry photo of " + sentence.removeprefix("A photo of ")
    lead = "A very blurry photo." if scene.blur == "very" else "A blurry photo."
    guesses = best_guesses(scene.labels) if length == "long" else ""
    return f"{lead} Best guesses: {guesses}." if guesses else lead


def _with_visible_text(sentence: str, scene: Scene) -> str:
    """``long`` captions quote clearly read text in a photo (a sign, a label)."""
    lines = [clean_text(text) for text, confidence in scene.text if confidence >= READABLE]
    visible = " / ".join(line for line in lines if sum(ch.isalnum() for ch in line) >= 2)
    return f"{sentence} Text in it reads “{visible}”." if visible else sentence
