from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.documents import (
    CHAPTER_KEYS,
    CHARACTER_KEYS,
    LOCATION_KEYS,
    NOVEL_KEYS,
    Document,
    key_order_for,
    parse_document,
    render_document,
)
from storage.errors import Invalid

CHAPTER = """\
---
id: ch_01
title: The Storm
number: 1
weight: 1
status: draft
draft: true
---
Rain hammered the roof.
"""


def test_chapter_front_matter_and_body_are_read():
    document = parse_document(CHAPTER)
    assert document.meta == {
        "id": "ch_01",
        "title": "The Storm",
        "number": 1,
        "weight": 1,
        "status": "draft",
        "draft": True,
    }
    assert document.body == "Rain hammered the roof.\n"


def test_text_without_front_matter_is_all_body():
    assert parse_document("Just prose.\n---\nmore") == Document({}, "Just prose.\n---\nmore")


def test_empty_front_matter_is_an_empty_mapping():
    assert parse_document("---\n---\nBody") == Document({}, "Body")


def test_crlf_fences_are_accepted():
    assert parse_document("---\r\ntitle: X\r\n---\r\nBody") == Document({"title": "X"}, "Body")


def test_dates_come_back_as_the_strings_the_writer_typed():
    document = parse_document("---\npublished: 2024-05-01\nat: 2024-05-01 10:00:00\n---\n")
    assert document.meta == {"published": "2024-05-01", "at": "2024-05-01 10:00:00"}
    assert render_document(document.meta, document.body) == (
        "---\nat: 2024-05-01 10:00:00\npublished: 2024-05-01\n---\n"
    )


def test_front_matter_that_is_not_yaml_is_invalid():
    with pytest.raises(Invalid) as raised:
        parse_document("---\ntitle: [unclosed\n---\nBody\n")
    assert raised.value.code == "invalid_front_matter"
    assert raised.value.details["reason"] == "not_yaml"
    assert raised.value.details["line"] >= 2


def test_front_matter_that_is_not_a_mapping_is_invalid():
    with pytest.raises(Invalid) as raised:
        parse_document("---\n- one\n- two\n---\nBody\n")
    assert raised.value.code == "invalid_front_matter"
    assert raised.value.details == {"reason": "not_a_mapping", "type": "list"}


def test_unterminated_front_matter_is_invalid():
    with pytest.raises(Invalid) as raised:
        parse_document("---\ntitle: X\nBody\n")
    assert raised.value.details == {"reason": "unterminated"}


def test_python_tags_are_refused_not_executed():
    with pytest.raises(Invalid):
        parse_document("---\nx: !!python/object/apply:os.system ['true']\n---\n")


def test_known_keys_come_first_in_their_order_and_the_rest_sorted():
    meta = {"zeta": 1, "status": "draft", "alpha": 2, "title": "T", "id": "c"}
    text = render_document(meta, "", CHAPTER_KEYS)
    assert text == "---\nid: c\ntitle: T\nstatus: draft\nalpha: 2\nzeta: 1\n---\n"


def test_unicode_is_written_as_is_and_long_strings_are_not_wrapped():
    summary = "Élodie rencontre Дмитрий à 東京, " * 20
    text = render_document({"summary": summary.strip()}, "")
    assert text == f"---\nsummary: {summary.strip()}\n---\n"


def test_strings_are_quoted_only_when_yaml_needs_it():
    text = render_document({"a": "plain words", "b": "yes", "c": "Note: colon", "d": "42"}, "")
    assert text == "---\na: plain words\nb: 'yes'\nc: 'Note: colon'\nd: '42'\n---\n"


def test_multiline_strings_are_written_as_blocks():
    text = render_document({"backstory": "Born at sea.\nRaised ashore.\n"}, "", CHARACTER_KEYS)
    assert text == "---\nbackstory: |\n  Born at sea.\n  Raised ashore.\n---\n"


@pytest.mark.parametrize(
    "value", ["a\x85b", "a\u2028b", "a\rb", "ends with blank lines\n\n\n", "\n"]
)
def test_odd_line_breaks_and_trailing_blank_lines_survive_a_round_trip(value):
    text = render_document({"summary": value}, "")
    assert "\n...\n" not in text
    assert parse_document(text).meta == {"summary": value}


def test_an_unchanged_chapter_renders_to_the_same_bytes():
    document = parse_document(CHAPTER)
    assert render_document(document.meta, document.body, CHAPTER_KEYS) == CHAPTER


def test_empty_meta_writes_no_front_matter():
    assert render_document({}, "Plain body\n") == "Plain body\n"


def test_empty_meta_with_a_body_starting_with_a_rule_keeps_the_rule_as_body():
    text = render_document({}, "---\nnot front matter\n")
    assert parse_document(text) == Document({}, "---\nnot front matter\n")


def test_key_order_is_chosen_by_path():
    assert key_order_for("chapters/the-storm.md") == CHAPTER_KEYS
    assert key_order_for("characters/ada.md") == CHARACTER_KEYS
    assert key_order_for("locations/harbour.md") == LOCATION_KEYS
    assert key_order_for("novel.md") == NOVEL_KEYS
    assert key_order_for("notes/ideas.md") == ()


_scalars = (
    st.text()
    | st.integers()
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=False, allow_infinity=False)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), inner, max_size=3)
    ),
    max_leaves=6,
)
_metas = st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), _values, max_size=6)


@settings(max_examples=200)
@given(meta=_metas, body=st.text())
def test_rendering_is_lossless_and_stable(meta, body):
    text = render_document(meta, body, CHAPTER_KEYS)
    document = parse_document(text)
    assert document.body == body
    assert document.meta == meta
    assert render_document(document.meta, document.body, CHAPTER_KEYS) == text


_FRONT_MATTERS = [
    "id: 01hz\ntitle: The Lamp Room\nnumber: 5\nweight: 5\nstatus: draft\ndraft: true",
    'title: "Quoted: with colon"\ndate: 2024-05-01T10:00:00+02:00\nday: 2024-05-01',
    "title: 'single ''quoted'''\ntags: [sea, night]\nnested: {a: 1, b: [x, y]}",
    "title: Zoë «Ünïcode» 漢字\nsummary: |\n  two lines\n  of text\nfolded: >\n  one\n  line",
    "n: 0x1F\nf: 1.5e3\ninf: .inf\nnull_one: ~\nyes_word: yes\noctal: 0o17\nempty:",
    "anchor: &a [1, 2]\nref: *a\nkey with spaces: value\n'quoted key': 1",
]


@pytest.mark.parametrize("front", _FRONT_MATTERS)
def test_the_c_parser_loads_what_the_python_parser_loads(front: str) -> None:
    """Front matter is parsed by libyaml when PyYAML has it: the values must not change."""
    import yaml

    from storage import documents

    class PurePython(yaml.SafeLoader):
        pass

    PurePython.yaml_implicit_resolvers = documents._Loader.yaml_implicit_resolvers
    PurePython.yaml_constructors = documents._Loader.yaml_constructors
    assert yaml.__with_libyaml__, "PyYAML without libyaml: parsing is slower than measured"
    for text in (front, front + "\n"):
        assert yaml.load(text, Loader=documents._Loader) == yaml.load(text, Loader=PurePython)
    expected = yaml.load(front + "\n", Loader=PurePython)
    assert parse_document(f"---\n{front}\n---\nBody\n").meta == expected
