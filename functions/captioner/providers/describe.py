"""Turn classifier labels into a short, honest sentence.

Pure string logic (no model, no onnxruntime), so it is cheap to import and easy to test.
The sentence only claims what the scores support: one or two confident labels are stated,
weaker ones are hedged as "uncertain", and with nothing plausible it says just "A photo."
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from captioner.providers.base import Length

#: A label at or above this probability is stated as what the photo shows.
THRESHOLD = 0.3
#: Below ``threshold`` but at or above this, a label is offered as an uncertain guess.
FLOOR = 0.05
#: Alternatives listed by ``long`` captions must reach this probability (1% when rounded).
MIN_ALTERNATIVE = 0.01
MAX_ALTERNATIVES = 3

# ImageNet lemmas that the synonym rule in ``clean_label`` gets wrong.
_OVERRIDES = {
    "beacon, lighthouse, beacon light, pharos": "lighthouse",
    "brass, memorial tablet, plaque": "plaque",
    "church, church building": "church",
    "jean, blue jean, denim": "jeans",
    "loudspeaker, speaker, speaker unit, loudspeaker system, speaker system": "loudspeaker",
    "maillot, tank suit": "tank suit",
    "pizza, pizza pie": "pizza",
    "prison, prison house": "prison",
    "projectile, missile": "missile",  # merges with the "missile" class
    "sunglass": "sunglasses",  # merges with "sunglasses, dark glasses, shades"
    "television, television system": "television",
    "washer, automatic washer, washing machine": "washing machine",
}
# Mass and plural nouns take no article: "a photo of guacamole", not "of a guacamole".
_UNCOUNTABLE = frozenset(
    {
        "binoculars",
        "broccoli",
        "carbonara",
        "chain mail",
        "chocolate sauce",
        "consomme",
        "corn",
        "dough",
        "eggnog",
        "guacamole",
        "hay",
        "jeans",
        "mashed potato",
        "rapeseed",
        "red wine",
        "sunglasses",
        "swimming trunks",
        "toilet tissue",
        "velvet",
        "wool",
    }
)
# Spelling says vowel, sound says consonant ("a unicycle") or the reverse ("an hourglass").
_A_PREFIXES = ("eu", "one", "uni", "use", "usu", "ut", "ewe")
_AN_PREFIXES = ("hour", "honest", "honor", "honour", "heir")
_AN_LETTERS = frozenset("AEFHILMNORSX")  # letter names that start with a vowel sound
_INITIALISM = re.compile(r"[A-Z][A-Z0-9]{0,4}(?=[\s-]|$)")  # "CD player", "U-boat", "TV"


def clean_label(raw: str) -> str:
    """The most readable name from an ImageNet lemma list like ``"tabby, tabby cat"``.

    The first name is the canonical one, but when it is a single, often ambiguous word, a
    synonym adding one word to it ("tabby cat", "computer mouse") is clearer. A capitalised
    word in front is skipped: that is a Latin binomial ("Capra ibex"), not English.
    """
    raw = raw.strip()
    if raw in _OVERRIDES:
        return _OVERRIDES[raw]
    first, *others = (name.strip() for name in raw.split(","))
    if " " in first:
        return first
    for name in others:
        words = name.split()
        if len(words) != 2:
            continue
        if words[0] == first or (words[1] == first and words[0].islower()):
            return name
    return first


def merge_labels(pairs: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """Clean the names, add up the scores of labels that read the same, sort by score.

    ImageNet has near-duplicate classes ("missile" and "projectile, missile"; two "crane"s);
    as words they are one guess, and splitting their probability would understate it.
    """
    scores: dict[str, float] = {}
    for raw, score in pairs:
        name = clean_label(raw)
        scores[name] = scores.get(name, 0.0) + float(score)
    return sorted(scores.items(), key=lambda item: item[1], reverse=True)


def with_article(noun: str) -> str:
    """``noun`` with "a" or "an" in front (none for mass nouns)."""
    if noun.lower() in _UNCOUNTABLE:
        return noun
    return f"{_article(noun)} {noun}"


def _article(noun: str) -> str:
    initialism = _INITIALISM.match(noun)
    if initialism and (len(initialism.group()) > 1 or noun[1:2] == "-"):
        return "an" if noun[0] in _AN_LETTERS else "a"
    lower = noun.lower()
    if lower.startswith(_A_PREFIXES):
        return "a"
    if lower.startswith(_AN_PREFIXES):
        return "an"
    return "an" if lower[:1] in ("a", "e", "i", "o", "u") else "a"


def describe(
    labels: Sequence[tuple[str, float]],
    length: Length = "normal",
    *,
    threshold: float = THRESHOLD,
    floor: float = FLOOR,
) -> str:
    """A caption from top-k ``(label, probability)`` pairs (raw or clean names, any order).

    * ``short``: the single best label ("A photo of an espresso.").
    * ``normal``: up to two ("A photo of a tiger cat or an Egyptian cat.").
    * ``long``: as ``normal`` with percentages, plus up to three other possibilities.
    """
    ranked = merge_labels(labels)
    mentioned = _mentioned(ranked, length, threshold, floor)
    confident = bool(mentioned) and mentioned[0][1] >= threshold
    sentence = _sentence(mentioned, confident=confident, percent=length == "long")
    if length != "long":
        return sentence
    others = [(n, s) for n, s in ranked[len(mentioned) :] if s >= MIN_ALTERNATIVE]
    others = others[:MAX_ALTERNATIVES]
    if not others:
        return sentence
    lead = "Other possibilities" if mentioned else "Best guesses"
    return f"{sentence} {lead}: {', '.join(_phrase(n, s, True) for n, s in others)}."


def best_guesses(labels: Sequence[tuple[str, float]], limit: int = MAX_ALTERNATIVES) -> str:
    """ "a bubble (55%), a balloon (4%)": the top labels of at least 1%, with percentages."""
    ranked = [(n, s) for n, s in merge_labels(labels) if s >= MIN_ALTERNATIVE][:limit]
    return ", ".join(_phrase(name, score, True) for name, score in ranked)


def _mentioned(
    ranked: list[tuple[str, float]], length: Length, threshold: float, floor: float
) -> list[tuple[str, float]]:
    """The labels the main sentence names: confident ones, else plausible guesses."""
    limit = 1 if length == "short" else 2
    confident = [(n, s) for n, s in ranked if s >= threshold]
    if confident:
        return confident[:limit]
    return [(n, s) for n, s in ranked if s >= floor][:limit]


def _sentence(mentioned: list[tuple[str, float]], *, confident: bool, percent: bool) -> str:
    if not mentioned:
        return "A photo."
    nouns = " or ".join(_phrase(name, score, percent) for name, score in mentioned)
    if confident:
        return f"A photo of {nouns}."
    return f"A photo (uncertain): maybe {nouns}."


def _phrase(name: str, score: float, percent: bool) -> str:
    return f"{with_article(name)} ({round(score * 100)}%)" if percent else with_article(name)
