"""The caption rules of the offline describer: people, pages, blur, then objects (no model)."""

from __future__ import annotations

import pytest

from captioner.providers.scene import (
    BLURRY_BELOW,
    PAGE_COVERAGE,
    PAGE_LINES,
    READABLE,
    VERY_BLURRY_BELOW,
    Scene,
    clean_text,
    describe_scene,
    signal_labels,
)

SHARP = 500.0
CUP = [("espresso", 0.62), ("cup", 0.31), ("coffee mug", 0.04)]
VAGUE = [("football helmet", 0.16), ("bobsled, bobsleigh, bob", 0.11)]
PAGE_LINES_READ = [
    ("Region-based segmentation", 0.99),
    ("Let us first determine markers of the coins and the", 0.97),
]
PAGE = Scene(
    labels=[("menu", 0.2)],
    text_coverage=0.6,
    text_lines=7,
    text_score=0.96,
    text=PAGE_LINES_READ,
    sharpness=SHARP,
)
SCRAWL = Scene(
    labels=[("maze", 0.4)],
    text_coverage=0.6,
    text_lines=4,
    text_score=0.8,
    text=[("We", 0.33), ("mrh", 0.26)],
    sharpness=SHARP,
)


def scene(**changes: object) -> Scene:
    base: dict[str, object] = {"labels": CUP, "sharpness": SHARP}
    return Scene(**(base | changes))  # type: ignore[arg-type]


# -- objects: the classifier's sentence when nothing else applies --------------------------


def test_a_plain_photo_keeps_the_classifier_sentence() -> None:
    assert describe_scene(scene()) == "A photo of an espresso or a cup."
    assert describe_scene(scene(), "short") == "A photo of an espresso."
    assert signal_labels(scene()) == []


def test_unmeasured_sharpness_is_not_blur() -> None:
    assert describe_scene(scene(sharpness=None)) == "A photo of an espresso or a cup."


# -- people ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("faces", "who"),
    [
        ([0.9], "a person"),
        ([0.9, 0.7], "two people"),
        ([0.9] * 3, "three people"),
        ([0.9] * 5, "five people"),
        ([0.9] * 6, "a group of people"),
    ],
)
def test_faces_are_counted_as_people(faces: list[float], who: str) -> None:
    assert describe_scene(scene(labels=VAGUE, faces=faces)) == f"A photo of {who}."


def test_a_confident_object_is_named_beside_the_person() -> None:
    labels = [("tripod", 0.94), ("reflex camera", 0.01)]
    assert describe_scene(scene(labels=labels, faces=[0.77])) == "A photo of a person and a tripod."
    assert describe_scene(scene(labels=labels, faces=[0.77]), "short") == "A photo of a person."


def test_a_confident_garment_is_worn() -> None:
    labels = [("military uniform", 0.55), ("suit", 0.2)]
    text = describe_scene(scene(labels=labels, faces=[0.8]))
    assert text == "A photo of a person wearing a military uniform."


def test_uncertain_objects_are_left_out_next_to_a_person() -> None:
    assert describe_scene(scene(labels=VAGUE, faces=[0.94])) == "A photo of a person."


def test_what_a_face_itself_triggers_is_never_said() -> None:
    # ImageNet classes for skin, hair or make-up would be a guess about the person.
    labels = [("wig", 0.5), ("lipstick, lip rouge", 0.35)]
    assert describe_scene(scene(labels=labels, faces=[0.9])) == "A photo of a person."
    labels = [("wig", 0.5), ("tripod", 0.4)]
    assert describe_scene(scene(labels=labels, faces=[0.9])) == "A photo of a person and a tripod."


def test_person_captions_never_guess_gender() -> None:
    words = {"man", "woman", "men", "women", "boy", "girl", "he", "she", "his", "her"}
    for labels in (CUP, VAGUE, [("military uniform", 0.9)], [("bikini", 0.9)]):
        for count in range(1, 8):
            for length in ("short", "normal", "long"):
                text = describe_scene(scene(labels=labels, faces=[0.9] * count), length)
                said = set(text.lower().replace(".", " ").replace(",", " ").split())
                assert not said & words, text


def test_the_person_label_comes_first_with_the_best_face_score() -> None:
    labels = signal_labels(scene(faces=[0.7, 0.93]))
    assert labels == [("person", 0.93)]


def test_blurry_people() -> None:
    assert describe_scene(scene(labels=VAGUE, faces=[0.8], sharpness=20)) == (
        "A blurry photo of a person."
    )
    very = scene(labels=[("tripod", 0.9)], faces=[0.8], sharpness=3)
    assert describe_scene(very) == "A very blurry photo of a person."


# -- pages of text ----------------------------------------------------------------------------


def test_a_page_quotes_its_first_words_by_length() -> None:
    assert describe_scene(PAGE) == (
        "A page of text beginning “Region-based segmentation Let us first determine markers of…”."
    )
    assert describe_scene(PAGE, "short") == "A page of text."
    long = describe_scene(PAGE, "long")
    assert long.endswith(
        "“Region-based segmentation Let us first determine markers of the coins and the”."
    )


def test_a_page_needs_coverage_and_lines() -> None:
    assert PAGE.is_page
    thin = Scene(**(vars(PAGE) | {"text_coverage": PAGE_COVERAGE - 0.01}))
    few = Scene(**(vars(PAGE) | {"text_lines": PAGE_LINES - 1}))
    assert not thin.is_page and not few.is_page


def test_a_sharp_page_that_does_not_read_is_handwriting_or_unclear_text() -> None:
    assert describe_scene(SCRAWL) == "A page of handwriting or unclear text."
    assert describe_scene(SCRAWL, "long") == (
        "A page of handwriting or unclear text (writing covers 60% of the image; "
        "the text reader is 29% sure of its reading)."
    )
    names = [name for name, _ in signal_labels(SCRAWL)]
    assert names == ["text", "handwriting"]
    assert dict(signal_labels(SCRAWL))["handwriting"] == pytest.approx(0.7, abs=0.02)


def test_a_blurred_page_that_does_not_read_is_not_called_handwriting() -> None:
    blurred = Scene(**(vars(SCRAWL) | {"sharpness": 20.0}))
    assert describe_scene(blurred) == "A blurry photo of a page of text."
    very = Scene(**(vars(SCRAWL) | {"sharpness": 4.0}))
    assert describe_scene(very) == "A very blurry photo of a page of text."
    assert "handwriting" not in dict(signal_labels(very))


def test_a_page_that_reads_is_never_very_blurry() -> None:
    soft = Scene(**(vars(PAGE) | {"sharpness": 4.0}))
    assert describe_scene(soft).startswith("A blurry photo of a page of text beginning “Region")


def test_reading_confidence_is_weighted_by_length() -> None:
    mixed = Scene(text=[("ab", 0.2), ("a long clear line of text", 0.99)])
    assert mixed.reading_confidence == pytest.approx((2 * 0.2 + 25 * 0.99) / 27)
    assert mixed.readable == (mixed.reading_confidence >= READABLE)


def test_big_clear_lettering_is_quoted() -> None:
    sign = scene(
        text_coverage=0.5, text_lines=2, text_score=0.95, text=[("Surf", 0.98), ("array", 0.97)]
    )
    assert describe_scene(sign) == "An image of the text “Surf array”."
    assert describe_scene(sign, "short") == "An image of text."
    assert dict(signal_labels(sign))["text"] == 0.95


def test_a_stray_text_box_in_a_photo_is_not_text() -> None:
    stray = scene(text_coverage=0.002, text_lines=1, text_score=0.5, text=[("YA", 0.47)])
    assert describe_scene(stray) == "A photo of an espresso or a cup."
    assert signal_labels(stray) == []


def test_long_captions_quote_clear_text_in_a_photo() -> None:
    tag = scene(faces=[0.8], labels=VAGUE, text_coverage=0.04, text_lines=3,
                text=[("卓长", 0.44), ("HOPPER", 0.92)])  # fmt: skip
    assert describe_scene(tag) == "A photo of a person."
    assert describe_scene(tag, "long") == "A photo of a person. Text in it reads “HOPPER”."


def test_text_read_from_an_image_is_made_safe() -> None:
    assert clean_text("[bold red]hi[/]\x1b[31m\nthere\t!") == "bold red hi / 31m there !"
    assert clean_text("Café  No.5: 3/4 = 0,75 (ok)") == "Café No.5: 3/4 = 0,75 (ok)"
    page = Scene(**(vars(PAGE) | {"text": [("[link]x[/link] ok", 0.99)] * 3}))
    assert "[" not in describe_scene(page)


# -- blur -------------------------------------------------------------------------------------


def test_mild_blur_keeps_a_confident_object() -> None:
    assert (
        describe_scene(scene(sharpness=BLURRY_BELOW - 1))
        == "A blurry photo of an espresso or a cup."
    )
    assert describe_scene(scene(labels=VAGUE, sharpness=20)) == "A blurry photo."


def test_very_blurry_photos_name_no_object() -> None:
    very = scene(labels=[("bubble", 0.55), ("spotlight", 0.12)], sharpness=VERY_BLURRY_BELOW - 1)
    assert describe_scene(very) == "A very blurry photo."
    assert describe_scene(very, "short") == "A very blurry photo."
    assert describe_scene(very, "long") == (
        "A very blurry photo. Best guesses: a bubble (55%), a spotlight (12%)."
    )


def test_the_blurry_label_grows_as_edges_vanish() -> None:
    assert signal_labels(scene(sharpness=BLURRY_BELOW)) == []
    at_threshold = dict(signal_labels(scene(sharpness=BLURRY_BELOW - 0.01)))["blurry"]
    flat = dict(signal_labels(scene(sharpness=0.0)))["blurry"]
    assert at_threshold == pytest.approx(0.5, abs=0.01)
    assert flat == 1.0
    assert 0.5 < dict(signal_labels(scene(sharpness=10.0)))["blurry"] < 1.0


def test_signals_come_in_a_fixed_order() -> None:
    everything = Scene(**(vars(PAGE) | {"faces": [0.9], "sharpness": 20.0}))
    assert [name for name, _ in signal_labels(everything)] == ["person", "text", "blurry"]
