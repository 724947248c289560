import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localnat.scoring.steps import assign_tokens, segment


def texts(spans, text):
    return [text[s:e] for s, e in spans]


def tiles(spans, text):
    return (
        spans[0][0] == 0
        and spans[-1][1] == len(text)
        and all(a[1] == b[0] and a[0] < a[1] for a, b in zip(spans, spans[1:]))
    )


def test_sentence_splits_after_punctuation_and_newlines():
    t = 'It is 3.14 here. Then e.g. this one! Is "it?" Yes.\nNext line\n\nLast.'
    assert texts(segment(t, "sentence"), t) == [
        "It is 3.14 here. ",
        "Then e.g. this one! ",
        'Is "it?" ',
        "Yes.\n",
        "Next line\n\n",
        "Last.",
    ]


def test_math_never_splits():
    t = "We have $x = 1. y$ so. Then \\[ a. b\n c \\] holds. And $$p. q$$ too. \\(m. n\\) end."
    got = texts(segment(t, "sentence"), t)
    assert got == [
        "We have $x = 1. y$ so. ",
        "Then \\[ a. b\n c \\] holds. ",
        "And $$p. q$$ too. ",
        "\\(m. n\\) end.",
    ]


def test_newline_after_display_math_starts_a_step():
    t = "We have\n$$x^2=4$$\nSo x is two here.\n\\[a+b\\]\nThen done."
    assert texts(segment(t, "sentence"), t) == [
        "We have\n",
        "$$x^2=4$$\n",
        "So x is two here.\n",
        "\\[a+b\\]\n",
        "Then done.",
    ]


def test_prices_are_not_math():
    t = "It costs $5. Then it costs $3 more."
    assert texts(segment(t, "sentence"), t) == ["It costs $5. ", "Then it costs $3 more."]


def test_short_fragments_join_next_and_last_joins_previous():
    t = "1. First step here. a) Second step here. Ok. Third step. Hm."
    assert texts(segment(t, "sentence"), t) == [
        "1. First step here. ",
        "a) Second step here. ",
        "Ok. Third step. Hm.",
    ]


def test_line_paragraph_and_crlf():
    t = "one. two\r\nthree\r\n\r\nfour\n \nfive"
    assert texts(segment(t, "line"), t) == ["one. two\r\n", "three\r\n\r\n", "four\n \n", "five"]
    assert texts(segment(t, "paragraph"), t) == ["one. two\r\nthree\r\n\r\n", "four\n \n", "five"]
    # "two" has fewer than 4 non-whitespace characters: it joins the step after it
    assert texts(segment(t, "sentence"), t) == [
        "one. ",
        "two\r\nthree\r\n\r\n",
        "four\n \n",
        "five",
    ]


def test_given_steps_strings_and_offsets():
    t = "Step one.  Step  two.\nStep three."
    spans = segment(t, "column:steps", ["Step one.", "Step two.", "Step three."])
    assert texts(spans, t) == ["Step one.  ", "Step  two.\n", "Step three."]
    assert segment(t, "column:steps", [0, 11, 22]) == spans
    with pytest.raises(ValueError, match="does not match"):
        segment(t, "column:steps", ["Step one.", "Step 2."])
    with pytest.raises(ValueError, match="goes on"):
        segment(t, "column:steps", ["Step one."])
    with pytest.raises(ValueError, match="ascending"):
        segment(t, "column:steps", [11, 0])
    for bad in (5, True, "Step one.", None, []):
        with pytest.raises(ValueError, match="non-empty list"):
            segment(t, "column:steps", bad)


def test_token_rule_and_empty_steps_merge(tok):
    # The tiny tokenizer splits this text as A|l|p|h|a| be|t|a|.| | | |\n|\n|G|a|m|m|a| d|e|l|t|a|.
    t = "Alpha beta.   \n\nGamma delta."
    enc = tok(t, add_special_tokens=False, return_offsets_mapping=True)
    assert [t[a:b] for a, b in enc["offset_mapping"]][5] == " be"
    # " be" (5, 8) belongs to the step holding "b" (6, 7); step (7, 8) gets no token and joins
    # the next; whitespace-only tokens belong to the step where they start: (11, 16) keeps 5.
    spans = [(0, 6), (6, 7), (7, 8), (8, 11), (11, 16), (16, len(t))]
    bounds, merged = assign_tokens(t, enc["offset_mapping"], spans)
    assert merged == [(0, 6), (6, 7), (7, 11), (11, 16), (16, 28)]
    assert bounds.tolist() == [0, 5, 6, 9, 14, 25]
    # an empty last step joins the one before it
    t = "Alpha be"
    enc = tok(t, add_special_tokens=False, return_offsets_mapping=True)
    bounds, merged = assign_tokens(t, enc["offset_mapping"], [(0, 6), (6, 7), (7, 8)])
    assert merged == [(0, 6), (6, 8)] and bounds.tolist() == [0, 5, 6]


ALPHABET = st.sampled_from(
    list("ab 3.!?\n\r$\\[]()e.g,\"'") + ["🙂", "é", "数", "  ", ". ", "\n\n"]
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(ALPHABET, min_size=1, max_size=60).map("".join),
    st.sampled_from(["sentence", "line", "paragraph"]),
)
def test_spans_tile_and_tokens_land_once(tok, text, segmenter):
    spans = segment(text, segmenter)
    assert tiles(spans, text)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    if not enc["input_ids"]:
        return
    bounds, merged = assign_tokens(text, enc["offset_mapping"], spans)
    assert tiles(merged, text)
    assert bounds[0] == 0 and bounds[-1] == len(enc["input_ids"])
    assert (bounds[1:] > bounds[:-1]).all()  # every step holds at least one token
    for i in range(len(merged)):
        for t in range(bounds[i], bounds[i + 1]):
            s, e = enc["offset_mapping"][t]
            chars = [p for p in range(s, e) if not text[p].isspace()] or [s]
            assert merged[i][0] <= chars[0] < merged[i][1]
