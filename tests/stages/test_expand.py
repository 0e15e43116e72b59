"""Stage expand and the expander on tiny Qwen3 LMs: a random one (garbage) and one taught a JSON reply."""
import json

import pyarrow as pa
import pytest

from stages.expand import expand_prompt, upsample
from stages.models.expander import parse_expansion
from stages.base import Resources
from stages.expand import CATALOG, Expand
from pipeline.kit.tiny.llm import TAUGHT_SYSTEM as SYSTEM

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make(model: str, **settings) -> Expand:
    stage = Expand(model=model, resources=Resources(cpus=1, gpus=0), **settings)
    stage.setup()
    return stage


CLIPS = pa.table({
    "status": ["accepted", "rejected", "accepted", "accepted", "accepted"],
    "caption_dense": ["The video shows a red fox running in deep snow. The camera pans left slowly.", None,
                      "", "In this clip, two children walk along a beach at dawn", "A train. " * 12],
})


def test_garbage_output_falls_back_with_its_reason(tiny_llm):
    out = make(tiny_llm, max_new_tokens=24, retries=1)(CLIPS).to_pylist()
    fox, rejected, empty, kids, train = out
    for row in (fox, kids, train):  # a random model never writes the JSON asked for
        assert row["expand_status"] == "fallback" and row["expand_attempts"] == 2
        assert row["expand_reason"].split(":")[0] in {"truncated", "not_json", "not_object", "empty"}
        assert row["expand_raw"] and row["expand_raw"] != row["caption_long"]  # the model's own reply, kept
        assert row["expand_truncated"] == row["expand_reason"].startswith("truncated")
    # The fallback is the dense caption itself, stock opening stripped; the short one is its first sentence.
    assert fox["caption_long"] == "A red fox running in deep snow. The camera pans left slowly."
    assert fox["caption_short"] == "A red fox running in deep snow."
    assert kids["caption_long"] == kids["caption_short"] == "Two children walk along a beach at dawn"
    assert train["caption_short"] == "A train."
    assert empty["expand_status"] == "skipped" and empty["expand_reason"].startswith("empty_input")
    assert empty["caption_long"] is None and empty["expand_attempts"] == 0
    assert all(rejected[f.name] is None for f in CATALOG)


def test_taught_model_reply_is_parsed_and_stock_opening_stripped(json_llm):
    stage = make(json_llm, system_prompt=SYSTEM, max_new_tokens=64, retries=0)
    fox, _, _, kids, _ = stage(CLIPS).to_pylist()
    for row in (fox, kids):
        assert row["expand_status"] == "ok" and row["expand_reason"] is None and row["expand_attempts"] == 1
        assert row["caption_long"] == "A red fox trotting through deep snow at dawn."  # "The video shows" gone
        assert row["caption_short"] == "A fox in snow."
        assert not row["expand_truncated"] and not row["expand_empty"] and row["expand_raw"] is None
        tokenizer = stage.expander.tokenizer
        assert row["caption_long_tokens"] == len(tokenizer(row["caption_long"], add_special_tokens=False).input_ids)
        assert row["caption_short_repetition"] == 0.0


def test_truncation_at_the_token_limit_is_flagged(json_llm):
    row = make(json_llm, system_prompt=SYSTEM, max_new_tokens=6, retries=0)(CLIPS).to_pylist()[0]
    assert row["expand_truncated"] is True and row["expand_status"] == "fallback"
    assert row["expand_reason"].startswith("truncated: no end within max_new_tokens=6; not_json")
    assert json.loads(row["expand_settings"])["max_new_tokens"] == 6


def test_batched_equals_unbatched_under_greedy_decoding(tiny_llm, json_llm):
    for model, system in [(tiny_llm, Expand.system_prompt), (json_llm, SYSTEM)]:
        batched = make(model, system_prompt=system, max_new_tokens=20, retries=0, gen_batch_size=8)(CLIPS)
        single = make(model, system_prompt=system, max_new_tokens=20, retries=0, gen_batch_size=1)(CLIPS)
        for name in ("caption_long", "caption_short", "expand_raw", "expand_reason", "expand_status"):
            assert batched.column(name).to_pylist() == single.column(name).to_pylist(), name


def test_prompt_templates_render_through_the_chat_template(tiny_llm):
    stage = make(tiny_llm, system_prompt="Write captions.", prompt_template="Caption: {caption}{source}",
                 source_template=" | Title: {source_text}", upsample_template="Prompt: {prompt}")
    expander = stage.expander
    assert expander.render(expander.caption_request(" a dog ", "Dog Days")) == (
        "<|im_start|>system\nWrite captions.<|im_end|>\n"
        "<|im_start|>user\nCaption: a dog | Title: Dog Days<|im_end|>\n<|im_start|>assistant\n")
    assert expander.caption_request("a dog") == "Caption: a dog"
    assert expander.upsample_request("a fox ") == "Prompt: a fox"
    other = make(tiny_llm, system_prompt="Write other captions.")
    assert other.expander.version()["expand_prompt_hash"] != expander.version()["expand_prompt_hash"]


def test_source_text_column_is_used_and_checked(tiny_llm):
    stage = make(tiny_llm, source_text_column="title", max_new_tokens=4, retries=0)
    table = pa.table({"status": ["accepted"], "caption_dense": [""], "title": ["Fox at dawn"]})
    row = stage(table).to_pylist()[0]
    assert row["expand_status"] == "fallback" and row["caption_long"] == "Fox at dawn"  # not skipped: has text
    with pytest.raises(KeyError, match="source_text_column 'title'"):
        stage(table.drop_columns(["title"]))


def test_upsample_uses_the_same_expander(json_llm, tiny_llm):
    settings = {"model": json_llm, "system_prompt": SYSTEM, "max_new_tokens": 64,
                "resources": {"cpus": 1, "gpus": 0}}
    assert upsample("a red fox in snow", settings) == "A red fox trotting through deep snow at dawn."
    garbage = expand_prompt("a red fox in snow", {"model": tiny_llm, "max_new_tokens": 8, "retries": 1,
                                                  "resources": {"cpus": 1, "gpus": 0}})
    assert (garbage.long, garbage.status, garbage.attempts) == ("a red fox in snow", "fallback", 2)


@pytest.mark.parametrize("reply, expected", [
    ('{"long": "A dog runs.", "short": "A dog."}', ({"long": "A dog runs.", "short": "A dog."}, None)),
    ('```json\n{"long": "In this video, a dog runs.", "short": "A dog."}\n```',
     ({"long": "A dog runs.", "short": "A dog."}, None)),
    ("A dog runs on the beach.", (None, "not_json: Expecting value at char 0")),
    ('{"long": "A dog runs.", "short": "A dog."} Hope this helps!', (None, "not_json: Extra data at char 43")),
    ('{"long": "A dog runs.", "short": "A dog."', (None, "not_json: Expecting ',' delimiter at char 41")),
    ('["A dog runs.", "A dog."]', (None, "not_object: got a JSON list")),
    ('{"long": "A dog runs."}', (None, "missing_key: short")),
    ('{"long": "A dog runs.", "short": "A dog.", "tags": []}', (None, "extra_key: tags")),
    ('{"long": "A dog runs.", "short": 3}', (None, "not_string: short is a JSON int")),
    ('{"long": "The video shows", "short": "A dog."}', (None, "empty_value: long")),
    ("   ", (None, "empty: the reply has no text")),
])
def test_parser_is_strict(reply, expected):
    assert parse_expansion(reply) == expected


def test_bad_settings_fail_at_construction():
    with pytest.raises(ValueError, match=r"^prompt_template: must contain \{caption\}"):
        Expand(prompt_template="Rewrite this.")
    with pytest.raises(ValueError, match=r"^upsample_template: unknown placeholder \{caption\}"):
        Expand(upsample_template="{caption}")
    with pytest.raises(ValueError, match=r"^retries: must be >= 0"):
        Expand(retries=-1)
