"""Label -> sentence logic of the offline provider (no model involved)."""

from __future__ import annotations

import pytest

from captioner.providers.describe import (
    FLOOR,
    THRESHOLD,
    best_guesses,
    clean_label,
    describe,
    merge_labels,
    with_article,
)

COFFEE = [("espresso", 0.62), ("cup", 0.31), ("coffee mug", 0.04), ("eggnog", 0.02)]
CAT = [("tiger cat", 0.385), ("Egyptian cat", 0.365), ("tabby, tabby cat", 0.169)]
VAGUE = [("football helmet", 0.16), ("bobsled, bobsleigh, bob", 0.11), ("go-kart", 0.06)]
NOISE = [("soccer ball", 0.046), ("baseball", 0.044), ("armadillo", 0.031), ("daisy", 0.001)]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("tabby, tabby cat", "tabby cat"),
        ("mouse, computer mouse", "computer mouse"),
        ("espresso", "espresso"),
        ("tench, Tinca tinca", "tench"),
        ("great white shark, white shark, man-eater, Carcharodon carcharias", "great white shark"),
        ("ibex, Capra ibex", "ibex"),  # a Latin binomial is not a clearer English name
        ("dingo, warrigal, warragal, Canis dingo", "dingo"),
        ("German shepherd, German shepherd dog, alsatian", "German shepherd"),
        ("Egyptian cat", "Egyptian cat"),  # proper nouns keep their capitals
        ("projectile, missile", "missile"),
        ("  cup  ", "cup"),
    ],
)
def test_clean_label(raw: str, clean: str) -> None:
    assert clean_label(raw) == clean


def test_clean_label_is_idempotent() -> None:
    for raw, _ in CAT + VAGUE + COFFEE:
        once = clean_label(raw)
        assert clean_label(once) == once


@pytest.mark.parametrize(
    ("noun", "phrase"),
    [
        ("espresso", "an espresso"),
        ("cup", "a cup"),
        ("Egyptian cat", "an Egyptian cat"),
        ("umbrella", "an umbrella"),
        ("unicycle", "a unicycle"),
        ("European fire salamander", "a European fire salamander"),
        ("one-armed bandit", "a one-armed bandit"),
        ("hourglass", "an hourglass"),
        ("honeycomb", "a honeycomb"),
        ("hen", "a hen"),
        ("CD player", "a CD player"),
        ("MP3 player", "an MP3 player"),
        ("X-ray", "an X-ray"),
        ("U-boat", "a U-boat"),
        ("iPod", "an iPod"),
        ("guacamole", "guacamole"),
        ("sunglasses", "sunglasses"),
    ],
)
def test_with_article(noun: str, phrase: str) -> None:
    assert with_article(noun) == phrase


def test_merge_labels_adds_up_names_that_read_the_same() -> None:
    merged = merge_labels([("missile", 0.29), ("projectile, missile", 0.19), ("crane", 0.3)])
    assert merged[0][0] == "missile"
    assert merged[0][1] == pytest.approx(0.48)
    assert merged[1] == ("crane", 0.3)


def test_one_confident_label() -> None:
    assert describe([("espresso", 0.95), ("cup", 0.02)]) == "A photo of an espresso."


def test_two_confident_labels_normal() -> None:
    assert describe(COFFEE) == "A photo of an espresso or a cup."
    assert describe(CAT) == "A photo of a tiger cat or an Egyptian cat."


def test_short_names_only_the_best_label() -> None:
    assert describe(COFFEE, "short") == "A photo of an espresso."
    assert describe(VAGUE, "short") == "A photo (uncertain): maybe a football helmet."


def test_nothing_confident_is_hedged() -> None:
    assert describe(VAGUE) == "A photo (uncertain): maybe a football helmet or a bobsled."


def test_nothing_plausible_falls_back() -> None:
    assert describe(NOISE) == "A photo."
    assert describe(NOISE, "short") == "A photo."
    assert describe([]) == "A photo."


def test_long_gives_percentages_and_alternatives() -> None:
    assert describe(COFFEE, "long") == (
        "A photo of an espresso (62%) or a cup (31%). "
        "Other possibilities: a coffee mug (4%), eggnog (2%)."
    )


def test_long_lists_at_most_three_alternatives_above_one_percent() -> None:
    labels = [("espresso", 0.9), ("cup", 0.03), ("bagel", 0.02), ("plate", 0.015)]
    labels += [("pretzel", 0.012), ("spoon", 0.003)]
    text = describe(labels, "long")
    assert text.endswith("Other possibilities: a cup (3%), a bagel (2%), a plate (2%).")
    assert "pretzel" not in text and "spoon" not in text


def test_long_fallback_still_offers_best_guesses() -> None:
    assert describe(NOISE, "long") == (
        "A photo. Best guesses: a soccer ball (5%), a baseball (4%), an armadillo (3%)."
    )


def test_long_without_alternatives_is_just_the_sentence() -> None:
    assert describe([("tripod", 0.995), ("cup", 0.004)], "long") == "A photo of a tripod (100%)."


def test_threshold_and_floor_are_adjustable() -> None:
    assert describe(VAGUE, threshold=0.15) == "A photo of a football helmet."
    assert describe(NOISE, floor=0.04) == "A photo (uncertain): maybe a soccer ball or a baseball."


def test_defaults_are_ordered() -> None:
    assert 0 < FLOOR < THRESHOLD < 0.5  # two labels can both be confident


def test_order_and_raw_names_do_not_matter() -> None:
    shuffled = list(reversed(CAT))
    assert describe(shuffled) == describe(CAT)
    assert "tabby cat" in describe(CAT, "long")


def test_merged_duplicates_can_become_confident() -> None:
    labels = [("missile", 0.2), ("projectile, missile", 0.15), ("space shuttle", 0.05)]
    assert describe(labels) == "A photo of a missile."


def test_best_guesses_lists_the_top_labels_with_percentages() -> None:
    assert best_guesses(COFFEE) == "an espresso (62%), a cup (31%), a coffee mug (4%)"
    assert best_guesses(COFFEE, limit=1) == "an espresso (62%)"
    assert best_guesses([("daisy", 0.004)]) == ""  # under 1%: not a guess worth naming
