from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from storage import words
from storage.words import split_lines, tokenize, word_count


def test_punctuation_and_spaces_are_tokens_of_their_own():
    assert tokenize("Hello, world!") == ["Hello", ",", " ", "world", "!"]


def test_apostrophes_inside_words_keep_one_word():
    assert tokenize("don't stop l’homme") == ["don't", " ", "stop", " ", "l’homme"]


def test_apostrophes_outside_words_are_punctuation():
    assert tokenize("'tis the dogs'") == ["'", "tis", " ", "the", " ", "dogs", "'"]


def test_accented_words_are_one_token_precomposed_or_decomposed():
    assert tokenize("café crème") == ["café", " ", "crème"]
    assert tokenize("cafe\u0301 au lait") == ["cafe\u0301", " ", "au", " ", "lait"]


def test_devanagari_vowel_signs_stay_inside_their_word():
    assert tokenize("हिन्दी भाषा") == ["हिन्दी", " ", "भाषा"]


def test_cyrillic_words_are_tokens():
    assert tokenize("Привет, мир") == ["Привет", ",", " ", "мир"]


def test_each_cjk_character_is_a_token():
    assert tokenize("我爱你。") == ["我", "爱", "你", "。"]
    assert tokenize("東京タワー") == ["東", "京", "タ", "ワ", "ー"]
    assert tokenize("한국어") == ["한", "국", "어"]


def test_latin_next_to_cjk_splits_at_the_script_change():
    assert tokenize("iPhone发布") == ["iPhone", "发", "布"]


def test_emoji_are_symbols_and_keep_their_variation_selector():
    assert tokenize("I ❤️ it 👍") == ["I", " ", "❤️", " ", "it", " ", "👍"]


def test_whitespace_runs_are_one_token():
    assert tokenize("a \n\n b") == ["a", " \n\n ", "b"]


def test_underscore_is_markdown_punctuation_not_part_of_a_word():
    assert tokenize("_very_") == ["_", "very", "_"]


@settings(max_examples=300)
@given(st.text())
def test_tokens_always_join_back_to_the_text(text):
    assert "".join(tokenize(text)) == text


@given(st.text(alphabet=st.sampled_from("ab \n")))
def test_lines_join_back_and_only_the_last_may_lack_a_newline(text):
    lines = split_lines(text)
    assert "".join(lines) == text
    assert all(line.endswith("\n") for line in lines[:-1])
    assert all(line for line in lines)


def test_english_words_are_counted():
    assert word_count("The quick brown fox jumps over the lazy dog.") == 9


def test_contractions_and_elisions_count_once():
    assert word_count("Don't tell l’homme") == 3


def test_french_accents_and_cyrillic_are_counted_as_words():
    assert word_count("Élodie a mangé une crème brûlée.") == 6
    assert word_count("Война и мир") == 3


def test_cjk_counts_one_per_character():
    assert word_count("我爱你。") == 3
    assert word_count("東京に行った。") == 6
    assert word_count("안녕 세상") == 4


def test_mixed_scripts_add_up():
    assert word_count("Hello 世界") == 3


def test_emoji_and_punctuation_are_not_words():
    assert word_count("Wow!!! 🎉🎉 — fine… ❤️") == 2


def test_hyphenated_words_and_decimal_numbers_count_once():
    assert word_count("a well-known fact, 3.14 or 1,000") == 6


def test_markdown_syntax_does_not_count():
    body = "# Chapter One\n\n**Bold** and *em* and _em_.\n\n---\n\n> Quote\n\n- item\n"
    assert word_count(body) == 9


def test_link_urls_do_not_count_but_link_text_does():
    assert word_count("See [the old mill](https://example.com/old-mill) today.") == 5


def test_images_autolinks_bare_urls_and_html_do_not_count():
    body = (
        "![a map of the town](img/map.png)\n"
        "Write to <https://example.com/a/b> or https://example.org/x?y=z now.\n"
        "<!-- a note to self -->\n"
        "<span class='x'>Red</span>\n"
        "[ref]: https://example.com/ref\n"
    )
    assert word_count(body) == 5


def test_empty_text_has_no_words():
    assert word_count("") == 0
    assert word_count("   \n\n") == 0


def _count_from_tokens(text: str) -> int:
    """word_count's rule spelled out on `tokenize`'s tokens: the reference it must equal."""
    for pattern, replacement in words._MARKDOWN_NOISE:
        text = pattern.sub(replacement, text)
    tokens = words._classified_tokens(text)

    def joined(i: int) -> bool:
        if i < 2 or tokens[i - 2][0] != "word":
            return False
        joiner = tokens[i - 1][1]
        if joiner in "-\u2010\u2011":
            return True
        return joiner in ".," and tokens[i - 2][1][-1].isdigit() and tokens[i][1][0].isdigit()

    return sum(
        1
        for i, (kind, _) in enumerate(tokens)
        if kind == "cjk" or (kind == "word" and not joined(i))
    )


_TRICKY = st.sampled_from(
    list("ab Zé9-.,'’_!?\n\t字ひ한Ж³²٣❤") + ["\u0301", "\u093e", "\ufe0f", "\u2010", "\u2011"]
    + ["well-known", "3.14", "don't", "e\u0301te\u0301", "[x](http://y)", "<b>", "1,000"]
)  # fmt: skip


@settings(max_examples=1500, deadline=None)
@given(st.lists(_TRICKY, max_size=16).map("".join))
def test_word_count_equals_counting_the_tokens_that_diffs_and_merges_cut(text: str):
    assert word_count(text) == _count_from_tokens(text)


_LINES = st.lists(st.lists(_TRICKY, max_size=8).map("".join), max_size=8).map("\n".join)


@settings(max_examples=1500, deadline=None)
@given(_LINES, _LINES, _LINES, _LINES)
def test_recounting_from_an_earlier_version_equals_counting_afresh(
    head: str, old_middle: str, new_middle: str, tail: str
):
    """Texts sharing a first and a last part, as versions of one chapter do; "<" (HTML,
    which may span lines) falls back to a whole count, and is among the pieces."""
    old, new = head + old_middle + tail, head + new_middle + tail
    assert words.recount(old, word_count(old), new) == word_count(new)


def test_recounting_counts_only_the_lines_that_changed(monkeypatch):
    old = "".join(f"Paragraph {i} has five words.\n\n" for i in range(100))
    new = old.replace("Paragraph 50 has", "Paragraph 50 now has")
    counted: list[str] = []
    real = words.word_count
    monkeypatch.setattr(words, "word_count", lambda text: counted.append(text) or real(text))
    assert words.recount(old, 500, new) == 501
    assert counted == ["Paragraph 50 has five words.\n", "Paragraph 50 now has five words.\n"]
