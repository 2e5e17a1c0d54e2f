from __future__ import annotations

import re
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from sync import merge
from sync.merge import ConflictHunk, MergeResult, merge_documents, merge_texts

PARAGRAPH = (
    "Mara climbed the lighthouse stairs. The lamp had been dark for years. "
    "Below her, the sea kept its own counsel.\n"
)


def test_two_devices_editing_different_sentences_of_one_paragraph_merge_cleanly():
    ours = PARAGRAPH.replace("climbed", "raced up")
    theirs = PARAGRAPH.replace("for years", "for a decade")
    result = merge_texts(PARAGRAPH, ours, theirs)
    assert result.clean
    assert result.text == (
        "Mara raced up the lighthouse stairs. The lamp had been dark for a decade. "
        "Below her, the sea kept its own counsel.\n"
    )


def test_neighbouring_words_edited_on_each_side_merge_cleanly():
    result = merge_texts("the big dog barked\n", "the small dog barked\n", "the big cat barked\n")
    assert result == MergeResult("the small cat barked\n", [])


def test_two_devices_editing_different_paragraphs_merge_cleanly():
    base = "One.\n\nTwo.\n\nThree.\n"
    result = merge_texts(base, "One, edited.\n\nTwo.\n\nThree.\n", "One.\n\nTwo.\n\nThree!\n")
    assert result == MergeResult("One, edited.\n\nTwo.\n\nThree!\n", [])


def test_identical_edits_on_both_sides_are_not_conflicts():
    edited = PARAGRAPH.replace("dark", "cold") + "\nA new ending.\n"
    assert merge_texts(PARAGRAPH, edited, edited) == MergeResult(edited, [])
    ours = edited + "\nServer line.\n"
    assert merge_texts(PARAGRAPH, ours, edited) == MergeResult(ours, [])


def test_same_words_changed_differently_conflict_keeps_ours_and_records_theirs():
    base = "Intro.\n\n" + PARAGRAPH + "\nOutro.\n"
    ours = base.replace("dark for years", "dark since the war")
    theirs = base.replace("dark for years", "unlit for ages")
    result = merge_texts(base, ours, theirs)
    assert result.text == ours
    assert result.conflicts == [
        ConflictHunk(
            base=PARAGRAPH,
            ours=PARAGRAPH.replace("dark for years", "dark since the war"),
            theirs=PARAGRAPH.replace("dark for years", "unlit for ages"),
        )
    ]
    assert "<<<<<<<" not in result.text and ">>>>>>>" not in result.text


def test_a_conflict_keeps_ours_only_on_its_own_lines_and_merges_the_next_line():
    base = "The night was cold.\nThe wind rose.\n"
    ours = "The night was bitter.\nThe wind rose high.\n"
    theirs = "The night was freezing.\nThe gale rose.\n"
    result = merge_texts(base, ours, theirs)
    assert result.text == "The night was bitter.\nThe gale rose high.\n"
    assert result.conflicts == [
        ConflictHunk(
            "The night was cold.\n", "The night was bitter.\n", "The night was freezing.\n"
        )
    ]


def test_both_devices_inserting_different_text_at_the_same_point_conflict():
    base = "Start.\n"
    result = merge_texts(base, base + "\nServer ending.\n", base + "\nPhone ending.\n")
    assert result.text == base + "\nServer ending.\n"
    assert [(hunk.ours, hunk.theirs) for hunk in result.conflicts] == [
        ("\nServer ending.\n", "\nPhone ending.\n")
    ]


def test_deleting_a_paragraph_while_the_other_device_edits_it_conflicts():
    base = "Keep.\n\n" + PARAGRAPH + "\nKeep too.\n"
    ours = "Keep.\n\nKeep too.\n"
    theirs = base.replace("Mara", "Old Mara")
    result = merge_texts(base, ours, theirs)
    assert result.text == ours
    assert len(result.conflicts) == 1
    assert "Old Mara climbed" in (result.conflicts[0].theirs or "")


def test_accents_cyrillic_cjk_and_emoji_merge_word_by_word():
    base = "Élodie a mangé une crème brûlée. Она читала книгу. 我爱你们。 Good 👍 day.\n"
    ours = base.replace("mangé", "dévoré").replace("爱", "想")
    theirs = base.replace("книгу", "письмо").replace("你们", "他们").replace("👍", "🎉")
    result = merge_texts(base, ours, theirs)
    assert result.clean
    assert (
        result.text
        == "Élodie a dévoré une crème brûlée. Она читала письмо. 我想他们。 Good 🎉 day.\n"
    )


def test_cjk_edits_to_the_same_character_conflict():
    result = merge_texts("我爱你。\n", "我恨你。\n", "我想你。\n")
    assert result.text == "我恨你。\n"
    assert result.conflicts == [ConflictHunk("我爱你。\n", "我恨你。\n", "我想你。\n")]


def test_edits_that_touch_without_overlapping_merge_cleanly():
    assert merge_texts("The dog.\n", "The cat.\n", "The dog!\n") == MergeResult("The cat!\n", [])


def test_a_word_inserted_where_the_other_device_deleted_words_conflicts():
    result = merge_texts("Mara climbed.\n", "She climbed.\n", "Old Mara climbed.\n")
    assert result.text == "She climbed.\n"
    assert result.conflicts == [
        ConflictHunk("Mara climbed.\n", "She climbed.\n", "Old Mara climbed.\n")
    ]


def test_a_device_that_kept_typing_after_a_lost_sync_answer_extends_the_server_text():
    base = "Start.\n"
    ours = base + "\nNew paragraph.\n"
    theirs = base + "\nNew paragraph. And then more words.\n\nAnother one.\n"
    assert merge_texts(base, ours, theirs) == MergeResult(theirs, [])
    assert merge_texts(base, theirs, ours) == MergeResult(theirs, [])


def test_an_edit_on_one_side_only_is_taken_as_is():
    assert merge_texts("a\n", "a\n", "b\n") == MergeResult("b\n", [])
    assert merge_texts("a\n", "b\n", "a\n") == MergeResult("b\n", [])


CHAPTER = """\
---
id: ch_01
title: The Storm
number: 1
weight: 1
status: draft
draft: true
---
Rain hammered the roof. Mara counted the seconds.

Thunder answered.
"""


def test_title_changed_on_one_device_and_status_on_the_other_keeps_both():
    ours = CHAPTER.replace("title: The Storm", "title: The Tempest")
    theirs = CHAPTER.replace("status: draft", "status: completed")
    result = merge_documents("chapters/the-storm.md", CHAPTER, ours, theirs)
    assert result.clean
    assert result.text == CHAPTER.replace("The Storm", "The Tempest").replace(
        "status: draft", "status: completed"
    )


def test_front_matter_and_body_edits_from_both_devices_all_land():
    ours = CHAPTER.replace("draft: true", "draft: false").replace("Thunder", "Distant thunder")
    theirs = CHAPTER.replace("number: 1\nweight: 1", "number: 2\nweight: 2").replace(
        "counted", "whispered"
    )
    result = merge_documents("chapters/the-storm.md", CHAPTER, ours, theirs)
    assert result.clean
    assert result.text == (
        "---\nid: ch_01\ntitle: The Storm\nnumber: 2\nweight: 2\nstatus: draft\ndraft: false\n"
        "---\nRain hammered the roof. Mara whispered the seconds.\n\nDistant thunder answered.\n"
    )


def test_same_field_changed_differently_conflicts_keeps_ours_and_names_the_field():
    ours = CHAPTER.replace("title: The Storm", "title: The Tempest")
    theirs = CHAPTER.replace("title: The Storm", "title: 'Storm: Part One'")
    result = merge_documents("chapters/the-storm.md", CHAPTER, ours, theirs)
    assert result.text == ours
    assert result.conflicts == [
        ConflictHunk(
            base="The Storm", ours="The Tempest", theirs="'Storm: Part One'", field="title"
        )
    ]


def test_field_removed_on_one_side_and_changed_on_the_other_conflicts_with_none():
    ours = CHAPTER.replace("status: draft\n", "")
    theirs = CHAPTER.replace("status: draft", "status: completed")
    result = merge_documents("chapters/the-storm.md", CHAPTER, ours, theirs)
    assert result.text == ours
    assert result.conflicts == [
        ConflictHunk(base="draft", ours=None, theirs="completed", field="status")
    ]


def test_server_front_matter_bytes_are_kept_when_its_metadata_wins():
    base = CHAPTER.replace("draft: true\n", "draft: true\n# reviewed by Ana\n")
    ours = base.replace("title: The Storm", 'title: "The Tempest"')
    theirs = base.replace("Thunder", "Far thunder")
    result = merge_documents("chapters/the-storm.md", base, ours, theirs)
    assert result == MergeResult(ours.replace("Thunder", "Far thunder"), [])


def test_merged_front_matter_is_rendered_in_the_key_order_of_its_path():
    base = "---\nname: Ada\nrole: lead\n---\nNotes.\n"
    ours = "---\nrole: lead\nname: Ada Byron\n---\nNotes.\n"
    theirs = "---\nzodiac: leo\nname: Ada\nrole: lead\nid: c1\n---\nNotes.\n"
    result = merge_documents("characters/ada.md", base, ours, theirs)
    assert result == MergeResult(
        "---\nid: c1\nname: Ada Byron\nrole: lead\nzodiac: leo\n---\nNotes.\n", []
    )


def test_file_deleted_on_the_server_and_edited_on_the_device_is_kept_with_a_conflict():
    theirs = CHAPTER.replace("Thunder", "Lightning")
    result = merge_documents("chapters/the-storm.md", CHAPTER, None, theirs)
    assert result.text == theirs
    assert result.conflicts == [ConflictHunk(base=CHAPTER, ours=None, theirs=theirs)]


def test_file_edited_on_the_server_and_deleted_on_the_device_is_kept_with_a_conflict():
    ours = CHAPTER.replace("Thunder", "Lightning")
    result = merge_documents("chapters/the-storm.md", CHAPTER, ours, None)
    assert result.text == ours
    assert result.conflicts == [ConflictHunk(base=CHAPTER, ours=ours, theirs=None)]


def test_file_deleted_on_one_side_and_untouched_on_the_other_is_deleted():
    assert merge_documents("chapters/a.md", CHAPTER, None, CHAPTER) == MergeResult(None, [])
    assert merge_documents("chapters/a.md", CHAPTER, CHAPTER, None) == MergeResult(None, [])
    assert merge_documents("chapters/a.md", CHAPTER, None, None) == MergeResult(None, [])


def test_file_added_on_one_side_is_taken():
    assert merge_documents("chapters/a.md", None, None, CHAPTER) == MergeResult(CHAPTER, [])
    assert merge_documents("chapters/a.md", None, CHAPTER, None) == MergeResult(CHAPTER, [])


def test_file_added_on_both_sides_with_different_content_merges_against_an_empty_base():
    ours = "---\nid: ch_09\ntitle: Ending\n---\nThe end.\n"
    theirs = "---\nid: ch_09\nstatus: draft\n---\nThe real end.\n"
    result = merge_documents("chapters/ending.md", None, ours, theirs)
    assert result.text == "---\nid: ch_09\ntitle: Ending\nstatus: draft\n---\nThe end.\n"
    assert result.conflicts == [ConflictHunk(base="", ours="The end.\n", theirs="The real end.\n")]


def test_file_added_identically_on_both_sides_is_clean():
    assert merge_documents("chapters/a.md", None, CHAPTER, CHAPTER) == MergeResult(CHAPTER, [])


def test_unparseable_front_matter_falls_back_to_a_plain_text_merge():
    broken = CHAPTER.replace("title: The Storm", "title: [The Storm")
    ours = broken.replace("Rain", "Hail")
    theirs = broken.replace("Thunder", "Silence")
    result = merge_documents("chapters/the-storm.md", broken, ours, theirs)
    assert result == MergeResult(broken.replace("Rain", "Hail").replace("Thunder", "Silence"), [])


def test_unterminated_front_matter_on_one_side_still_merges_without_raising():
    theirs = CHAPTER.replace("---\nRain", "Rain")
    result = merge_documents(
        "chapters/the-storm.md", CHAPTER, CHAPTER.replace("id:", "id :"), theirs
    )
    assert isinstance(result.text, str)


# Property tests. A text is a list of (word, separator) items; base words are unique so
# the expected merge of disjoint edits can be written down.

_SEPARATORS = [" ", " ", " ", ", ", ". ", ".\n\n", "\n"]


def _text(items: list[tuple[str, str]]) -> str:
    return "".join(word + separator for word, separator in items)


@st.composite
def _bases(draw: st.DrawFn) -> list[tuple[str, str]]:
    size = draw(st.integers(min_value=6, max_value=30))
    separators = draw(st.lists(st.sampled_from(_SEPARATORS), min_size=size, max_size=size))
    separators[-1] = "\n"
    return [(f"w{index}", separator) for index, separator in enumerate(separators)]


_EDITS = st.sampled_from(["keep", "keep", "keep", "replace", "delete", "insert"])


def _apply(items: list[tuple[str, str]], edits: dict[int, str], name: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for index, (word, separator) in enumerate(items):
        edit = edits.get(index, "keep")
        if edit == "keep":
            out.append((word, separator))
        elif edit == "replace":
            out.append((f"{name}{index}", separator))
        elif edit == "insert":
            out.extend([(word, separator), (f"{name}{index}", " ")])
    return out


@settings(max_examples=200)
@given(data=st.data())
def test_edits_to_disjoint_regions_always_merge_cleanly_with_both_edits(data):
    base = data.draw(_bases())
    split = data.draw(st.integers(min_value=1, max_value=len(base) - 3))
    ours_edits = {i: data.draw(_EDITS) for i in range(split)}
    # Two untouched words between the regions: edits that touch each other may conflict.
    theirs_edits = {i: data.draw(_EDITS) for i in range(split + 2, len(base))}
    ours = _apply(base, ours_edits, "o")
    theirs = _apply(base, theirs_edits, "t")
    # Ours' edits all sit before theirs' region: applying theirs first shifts no index of ours.
    expected = _text(_apply(theirs, ours_edits, "o"))
    result = merge_texts(_text(base), _text(ours), _text(theirs))
    assert result.clean, result.conflicts
    assert result.text == expected


@settings(max_examples=200)
@given(data=st.data())
def test_nothing_the_device_sent_is_lost_and_conflicts_keep_the_server_text(data):
    base = data.draw(_bases())
    ours_edits = {i: data.draw(_EDITS) for i in range(len(base))}
    theirs_edits = {
        i: ours_edits[i] if data.draw(st.integers(0, 4)) == 0 else data.draw(_EDITS)
        for i in range(len(base))
    }
    ours = _apply(base, ours_edits, "o")
    theirs = _apply(base, theirs_edits, "t")
    base_text, ours_text, theirs_text = _text(base), _text(ours), _text(theirs)
    result = merge_texts(base_text, ours_text, theirs_text)
    merged = result.text
    assert merged is not None
    for hunk in result.conflicts:
        assert hunk.ours is not None and hunk.ours in merged
    kept_for_the_writer = merged + "".join(hunk.theirs or "" for hunk in result.conflicts)
    for word, _ in theirs:
        if word.startswith("t"):
            assert word in kept_for_the_writer
    for word, _ in ours:
        if word.startswith("o"):
            assert word in merged
    if result.clean:
        base_words = {word for word, _ in base}
        deleted = (base_words - {word for word, _ in ours}) | (
            base_words - {word for word, _ in theirs}
        )
        assert deleted.isdisjoint(re.findall(r"\w+", merged))


_fuzz_text = st.lists(
    st.sampled_from(["a", "b", " ", "\n", ".", "我", "---\n", "x: [", "y: 1\n"]), max_size=12
).map("".join)


@settings(max_examples=200)
@given(base=_fuzz_text, ours=_fuzz_text, theirs=_fuzz_text)
def test_any_three_texts_merge_without_raising_and_conflicts_keep_the_server_text(
    base, ours, theirs
):
    result = merge_texts(base, ours, theirs)
    assert result.text is not None
    assert all(hunk.ours is not None and hunk.ours in result.text for hunk in result.conflicts)
    assert merge_texts(base, theirs, theirs) == MergeResult(theirs, [])
    assert merge_texts(base, base, theirs) == MergeResult(theirs, [])
    document = merge_documents("chapters/x.md", base, ours, theirs)
    assert document.text is None or isinstance(document.text, str)


def _merged_line_by_line(path: str, base: str, ours: str, theirs: str) -> MergeResult:
    """`merge_documents` without its shortcut for edits apart: the line merge itself."""
    with mock.patch.object(merge, "_apart", return_value=None):
        return merge_documents(path, base, ours, theirs)


_FRONT = st.sampled_from(["", "---\ntitle: T\nstatus: draft\n---\n", "---\nbad: [\n---\n"])


@settings(max_examples=300)
@given(data=st.data(), front=_FRONT)
def test_edits_apart_merge_as_the_line_merge_merges_them(data, front):
    """The shortcut for edits on lines apart gives the line merge's text, byte for byte,
    whatever the edits; and is taken for edits apart (ours' region before theirs')."""
    base = data.draw(_bases())
    split = data.draw(st.integers(min_value=1, max_value=len(base) - 2))
    ours_edits = {i: data.draw(_EDITS) for i in range(split)}
    theirs_edits = {i: data.draw(_EDITS) for i in range(split, len(base))}
    if data.draw(st.booleans()):
        ours_edits, theirs_edits = theirs_edits, ours_edits
    base_text = front + _text(base)
    ours = front + _text(_apply(base, ours_edits, "o"))
    theirs = front + _text(_apply(base, theirs_edits, "t"))

    result = merge_documents("chapters/a.md", base_text, ours, theirs)

    assert result == _merged_line_by_line("chapters/a.md", base_text, ours, theirs)


def test_one_word_edits_in_different_paragraphs_of_a_long_chapter_take_the_shortcut():
    paragraphs = [f"Paragraph {n} of the chapter, with words." for n in range(200)]
    base = CHAPTER + "\n\n".join(paragraphs) + "\n"
    ours = base.replace("Paragraph 17 of", "Paragraph 17 from")
    theirs = base.replace("Paragraph 150 of the", "Paragraph 150 of a")

    spliced = merge._apart(base, ours, theirs)

    assert spliced is not None
    assert "Paragraph 17 from" in spliced and "Paragraph 150 of a" in spliced
    assert merge_documents("chapters/the-storm.md", base, ours, theirs) == MergeResult(spliced)
    assert _merged_line_by_line("chapters/the-storm.md", base, ours, theirs).text == spliced
    # The next paragraph: the blank line between them is untouched, so apart.
    near = base.replace("Paragraph 18 of", "Paragraph 18 near")
    assert merge._apart(base, ours, near) == ours.replace("Paragraph 18 of", "Paragraph 18 near")
    # The same paragraph: not apart; the words are merged one by one.
    same = base.replace(
        "Paragraph 17 of the chapter, with words", "Paragraph 17 of the chapter, with verbs"
    )
    assert merge._apart(base, ours, same) is None
    both = merge_documents("chapters/the-storm.md", base, ours, same)
    assert both.clean and "Paragraph 17 from the chapter, with verbs" in both.text
    # An edit in the front matter is merged field by field, never spliced.
    retitled = base.replace("title: The Storm", "title: The Gale")
    assert "title: The Storm" in base
    assert merge._apart(base, retitled, theirs) is None
