"""Prompt tags: every documented example of A1111's and lora-block-weight's syntax, with the meaning they give it.

Sources of the meanings (read, not copied):
- A1111 modules/extra_networks.py: the tag pattern `<(\\w+):([^>]+)>`, arguments split at `:`, an argument with
  one `=` is named; the ExtraNetwork docstring's `<hypernet:agm:1.1> <extrasupernet:master:12:13:14>`.
- A1111 extensions-builtin/Lora/extra_networks_lora.py: te = positional 2 (default 1) then `te=`; unet =
  positional 3 (default: te) then `unet=`; dyn = positional 4 or `dyn=`.
- KohakuBlueleaf/a1111-sd-webui-lycoris README: `<lyco:Model:1:0.5:dyn=13>`-style examples (te, unet, dyn).
- hako-mikan/sd-webui-lora-block-weight README and scripts/lora_block_weight.py: `lbw=`, `start=`, `stop=`,
  `step=5-10`, `lbwe=`, and the old positional form that new A1111 cannot read.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loader import prompt_tags
from loader.prompt_tags import PromptTagError, parse

# (prompt, [(kind, name, te, unet, blocks, start, stop)], cleaned text)
DOCUMENTED = [
    # A1111: the first number is the text-encoder multiplier and the UNet one unless given
    ("1girl, <lora:filmgrain:0.4>", [("lora", "filmgrain", 0.4, 0.4, "", None, None)], "1girl, "),
    ("<lora:filmgrain>", [("lora", "filmgrain", 1.0, 1.0, "", None, None)], ""),
    ("<lora:x:1:0.5>", [("lora", "x", 1.0, 0.5, "", None, None)], ""),
    ("<lora:x:te=0.5>", [("lora", "x", 0.5, 0.5, "", None, None)], ""),  # unet defaults to te after te=
    ("<lora:x:0.8:unet=0.3>", [("lora", "x", 0.8, 0.3, "", None, None)], ""),
    ("<lora:x:0.8:te=0.2>", [("lora", "x", 0.2, 0.2, "", None, None)], ""),  # te= overrides positional
    ("<lora:x:unet=0.3:te=2>", [("lora", "x", 2.0, 0.3, "", None, None)], ""),
    ("<lora:x: 0.5 >", [("lora", "x", 0.5, 0.5, "", None, None)], ""),  # float() strips spaces
    ("<lora:x:te= 0.5>", [("lora", "x", 0.5, 0.5, "", None, None)], ""),
    ("<lora:x:-1>", [("lora", "x", -1.0, -1.0, "", None, None)], ""),
    ("<lora:x:.5e1>", [("lora", "x", 5.0, 5.0, "", None, None)], ""),
    ("<lora:styles/ink v2:0.7>", [("lora", "styles/ink v2", 0.7, 0.7, "", None, None)], ""),
    # the lycoris extension's README: te, unet by position or name; lyco is the same network in A1111
    ("<lyco:Model:1:0.5>", [("lyco", "Model", 1.0, 0.5, "", None, None)], ""),
    ("<lyco:Model:unet=0.5>", [("lyco", "Model", 1.0, 0.5, "", None, None)], ""),
    ("<lyco:Model:te=1:unet=0.5>", [("lyco", "Model", 1.0, 0.5, "", None, None)], ""),
    # lora-block-weight README
    ("<lora:name:1:lbw=IN02>", [("lora", "name", 1.0, 1.0, "IN02", None, None)], ""),
    ("<lyco:name:1:1:lbw=IN02>", [("lyco", "name", 1.0, 1.0, "IN02", None, None)], ""),
    ("<lyco:name:1:1:lbw=1,1,1,1,1,1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0>",
     [("lyco", "name", 1.0, 1.0, "1,1,1,1,1,1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0", None, None)], ""),
    ("<lora:name:1:1:lbw=IN02:stop=10>", [("lora", "name", 1.0, 1.0, "IN02", None, 10)], ""),
    ("<lora:name:lbw=ALL:stop=10>", [("lora", "name", 1.0, 1.0, "ALL", None, 10)], ""),
    ("<lora:name:lbw=ALL:start=10>", [("lora", "name", 1.0, 1.0, "ALL", 10, None)], ""),
    ("<lora:name:lbw=ALL:step=5-10>", [("lora", "name", 1.0, 1.0, "ALL", 5, 10)], ""),
    ("<lora:name:1:lbw=MIDD>", [("lora", "name", 1.0, 1.0, "MIDD", None, None)], ""),
    # this pack's grammar inside lbw= (assignments keep their '='; ';' separates statements)
    ("<lora:x:0.7:lbw=IN04-IN05=0,OUT*=0.5; BASE=0.25>",
     [("lora", "x", 0.7, 0.7, "IN04-IN05=0,OUT*=0.5; BASE=0.25", None, None)], ""),
    # several tags, in order, removed as A1111 removes them (nothing else touched)
    ("a <lora:one:0.5>, b <lyco:two:1:0.25> c", [("lora", "one", 0.5, 0.5, "", None, None),
                                                 ("lyco", "two", 1.0, 0.25, "", None, None)], "a , b  c"),
    ("(<lora:x:1>:1.2), BREAK\n<lora:y:0.1>", [("lora", "x", 1.0, 1.0, "", None, None),
                                               ("lora", "y", 0.1, 0.1, "", None, None)], "(:1.2), BREAK\n"),
]

# Text A1111 would not read as a LoRA: left exactly as it is.
UNTOUCHED = [
    "", "a photo of a cat", "<12:30>", "<b>bold</b>", "time <12:30> and <b>", "1 < 2 > 0", "<hypernet:agm:1.1>",
    "<extrasupernet:master:12:13:14>", "(a:1.2) [b:c:0.5] {d|e}", "lora: 0.5", "<lora>", "emoji 🐈 <:>",
]

# (prompt, words the message must hold, the 1-based position it names)
MALFORMED = [
    ("<lora:x:abc>", ["'abc'", "not a number", "every LoRA"], 9),
    ("ok <lora:x:0.5.1>", ["'0.5.1'", "not a number"], 12),
    ("<lora:x:te = 0.5>", ["without spaces", "te=0.5", "ignore"], 9),
    ("<lora:x:te =0.5>", ["without spaces"], 9),
    ("<lora:a=b:0.5>", ["'a=b'", "contains '='", "next value as the LoRA's name"], 7),
    ("<lora:x:1:IN02>", ["'IN02'", "UNet multiplier", "lbw=IN02"], 11),
    ("<lora:x:1:0,0,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0>", ["not a number", "lbw="], 11),  # lbw's old positional form
    ("<lora:x:foo=1>", ["unknown option 'foo'", "te=, unet="], 9),
    ("<lora:x:lbwe=ATTNON>", ["lbwe=", "lbw="], 9),
    ("<lora:x:1:1:13>", ["dyn", "not supported"], 13),
    ("<lyco:Model:1:0.5:dyn=13>", ["dyn", "not supported"], 23),
    ("<lora:x:1:1:1:1>", ["too many values"], 15),
    ("<lora::1>", ["no LoRA name"], 1),
    ("<lora: :1>", ["no LoRA name"], 1),
    ("<lora:x:te=1:te=2>", ["given twice"], 14),
    ("<lora:x:unet=a=b>", ["two '='"], 9),
    ("<lora:x:te=>", ["not a number"], 12),
    ("<lora:x:lbw=>", ["lbw= is empty"], 13),
    ("<lora:x:start=ten>", ["step number"], 15),
    ("<lora:x:step=10>", ["step=5-10"], 14),
    ("<lora:x:start=2:step=5-10>", ["step= and start="], 22),
    ("<lora:x:start=9:stop=3>", ["before it starts"], None),
    ("<lora:x:1000>", ["outside"], 9),
    ("<LoRA:x:1>", ["case-sensitive", "<lora:"], 1),
    ("<LYCO:x:1>", ["case-sensitive", "<lyco:"], 1),
    ("a <lora:x:1", ["never closed"], 3),
    ("<lora :x:1>", ["not a tag A1111 reads"], 1),
    ("<lora:>", ["names no LoRA"], 1),
    ("<lora:a:<lora:b:1>", ["'<lora'", "not a number"], 9),
]


@pytest.mark.parametrize(("prompt", "expected", "cleaned"), DOCUMENTED)
def test_documented_syntax_means_what_a1111_and_lbw_say(prompt, expected, cleaned):
    text, tags = parse(prompt)
    assert text == cleaned
    assert [(t.kind, t.name, t.te, t.unet, t.blocks, t.start, t.stop) for t in tags] == expected
    for tag in tags:
        assert prompt[tag.position - 1:].startswith(tag.text)


@pytest.mark.parametrize("prompt", UNTOUCHED)
def test_text_without_lora_tags_passes_through_unchanged(prompt):
    text, tags = parse(prompt)
    assert tags == [] and text is prompt


@pytest.mark.parametrize(("prompt", "words", "position"), MALFORMED)
def test_malformed_tags_name_the_tag_and_position(prompt, words, position):
    with pytest.raises(PromptTagError) as caught:
        parse(prompt)
    message = str(caught.value)
    for word in words:
        assert word in message, message
    assert caught.value.position == position
    assert "character" in message


def test_stack_entries_are_the_ecosystems_three_tuples_with_blocks_and_steps():
    _, tags = parse("<lora:ink:0.6:0.9:lbw=OUTALL:start=3:stop=12>")
    entry = tags[0].entry("styles/ink.safetensors")
    name, strength_model, strength_clip = entry  # what other packs' consumers unpack
    assert (name, strength_model, strength_clip) == ("styles/ink.safetensors", 0.9, 0.6)
    assert (entry.blocks, entry.start, entry.stop, entry.position) == ("OUTALL", 3, 12, 1)


@pytest.mark.parametrize(("te", "unet", "expected"), [(0.7, 0.7, "<lora:n:0.7>"), (1.0, 0.25, "<lora:n:1:0.25>"),
                                                      (0.1 + 0.2, 0.1 + 0.2, "<lora:n:0.30000000000000004>")])
def test_format_tag_reads_back_to_the_same_strengths(te, unet, expected):
    tag = prompt_tags.format_tag("n", te, unet)
    assert tag == expected
    _, (read,) = parse(tag)
    assert (read.te, read.unet) == (te, unet)


_PROMPT_ALPHABET = st.sampled_from([*"<>:=,;. -_/abcLORAlorayc0123456789\n\t@*\"'", "lora", "lyco", "te=", "unet=",
                                    "lbw=", "<lora:"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_PROMPT_ALPHABET, max_size=60).map("".join))
def test_fuzz_any_text_parses_or_gives_the_clear_error(text):
    try:
        cleaned, tags = parse(text)
    except PromptTagError as e:
        assert "character" in str(e) or "before it starts" in str(e)
        return
    assert len(cleaned) <= len(text)
    if not tags:
        assert cleaned == text
    for tag in tags:
        assert tag.kind in ("lora", "lyco") and tag.name and text[tag.position - 1:].startswith(tag.text)


_NAME = st.text(st.characters(blacklist_characters=":<>=\x00", blacklist_categories=("Cs",)), min_size=1,
                max_size=20).filter(lambda s: s.strip())
_STRENGTH = st.floats(min_value=-100, max_value=100, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(_NAME, _STRENGTH, _STRENGTH, st.text(max_size=20).filter(lambda s: "<" not in s))
def test_fuzz_written_tags_read_back(name, te, unet, around):
    prompt = f"{around}{prompt_tags.format_tag(name, te, unet)}{around}"
    cleaned, (tag,) = parse(prompt)
    assert (tag.name, tag.te, tag.unet) == (name.strip(), te, unet)
    assert cleaned == around + around
