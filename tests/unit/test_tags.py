import unicodedata

from captioner.tags import (
    MAX_TAGS,
    TagStatus,
    is_opted_out,
    is_valid_value,
    plan_caption_tag,
    tag_value,
)


def test_tag_value_keeps_allowed_characters_and_drops_the_rest():
    value = tag_value("A cat, on a mat!\nNew line\tand tab: ok/yes @home = 1+1 - 2_3")
    assert value == "A cat on a mat. New line and tab: ok/yes @home = 1+1 - 2_3"
    assert is_valid_value(value)


def test_tag_value_is_nfc_and_keeps_unicode_letters_and_digits():
    decomposed = unicodedata.normalize("NFD", "Café in Zürich ٣ 日本")
    value = tag_value(decomposed)
    assert value == "Café in Zürich ٣ 日本" and unicodedata.is_normalized("NFC", value)


def test_tag_value_is_truncated_to_256_at_a_word_boundary():
    value = tag_value("word " * 100)
    assert len(value) <= 256 and not value.endswith(" ") and value.endswith("word")


def test_emoji_and_symbols_are_removed():
    assert tag_value("🐱 cat ♥ «quoted» — dash") == "cat quoted dash"


def test_is_valid_value_matches_s3_rules():
    assert is_valid_value("ok value_1.2:3/4=5+6-7@8")
    assert (
        not is_valid_value("new\nline")
        and not is_valid_value("tab\t")
        and not is_valid_value("x" * 257)
    )
    assert not is_valid_value("comma,")


def test_plan_merges_with_existing_tags():
    plan = plan_caption_tag([("team", "a")], "caption", "A dog.")
    assert plan.status is TagStatus.WRITTEN and plan.tags == [("team", "a"), ("caption", "A dog.")]


def test_plan_keeps_users_caption_tag():
    plan = plan_caption_tag([("caption", "mine")], "caption", "A dog.")
    assert plan.status is TagStatus.KEPT_EXISTING and plan.tags is None


def test_plan_treats_our_own_earlier_tag_as_written():
    plan = plan_caption_tag([("caption", "A dog.")], "caption", "A dog.")
    assert plan.status is TagStatus.WRITTEN and plan.tags is None


def test_plan_respects_the_ten_tag_limit():
    existing = [(f"k{i}", "v") for i in range(MAX_TAGS)]
    plan = plan_caption_tag(existing, "caption", "A dog.")
    assert plan.status is TagStatus.LIMIT_REACHED and plan.tags is None


def test_plan_drops_duplicate_keys_that_s3_would_reject():
    plan = plan_caption_tag([("a", "1"), ("a", "2")], "caption", "x")
    assert [k for k, _ in plan.tags] == ["a", "caption"]


def test_opt_out_needs_the_value_true():
    assert is_opted_out([("caption-skip", " True ")], "caption-skip")
    assert not is_opted_out([("caption-skip", "no")], "caption-skip")
    assert not is_opted_out([("other", "true")], "caption-skip")


def test_plan_replaces_the_value_we_wrote_before():
    plan = plan_caption_tag(
        [("team", "a"), ("caption", "Old caption")], "caption", "New one.", ours="Old caption"
    )
    assert plan.status is TagStatus.WRITTEN and plan.tags == [
        ("team", "a"),
        ("caption", "New one."),
    ]
    kept = plan_caption_tag(
        [("caption", "Edited by a human")], "caption", "New one.", ours="Old caption"
    )
    assert kept.status is TagStatus.KEPT_EXISTING and kept.tags is None
