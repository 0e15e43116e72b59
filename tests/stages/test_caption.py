"""Stage caption on a tiny random Qwen3-VL (built and saved locally, loaded like a hub checkpoint)."""
import json
import re

import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import load_config
from pipeline.kit.synth import write_video
from pipeline.kit.tiny import vlm
from pipeline.typed import ConfigError
from stages.base import Resources
from stages.caption import CATALOG, Caption
from stages.probe import Probe
from stages.split import Split

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> str:
    return vlm.build(tmp_path_factory.getbasetemp() / "tiny-vlm")["vlm"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> pa.Table:
    """Clip rows of two videos of different sizes (so batches mix input lengths), plus a rejected clip."""
    folder = tmp_path_factory.mktemp("caption-videos")
    tables = []
    for name, lengths, (w, h) in [("a.mp4", [60, 20, 72], (320, 180)), ("b.mp4", [72, 60], (160, 96))]:
        write_video(folder / name, lengths, width=w, height=h, seed=len(name) + w)
        probed = Probe()(pa.table({"source_uri": [str(folder / name)]}))
        tables.append(Split(sample_frames=4, decode_short_side=h, min_clip_s=1.5)(probed))
    table = pa.concat_tables(tables)
    assert table.column("status").to_pylist().count("rejected") == 1
    assert len({tuple(s) for s in table.column("frames_shape").to_pylist() if s}) == 2
    return table


def make(model: str, **settings) -> Caption:
    stage = Caption(model=model, resources=Resources(cpus=1, gpus=0), **settings)  # CPU, float32 everywhere
    stage.setup()
    return stage


@pytest.mark.parametrize("mode", ["video", "images"])
def test_batched_equals_unbatched_under_greedy_decoding(tiny_vlm, clips, mode):
    batched = make(tiny_vlm, input_mode=mode, max_new_tokens=12, gen_batch_size=8)(clips)
    single = make(tiny_vlm, input_mode=mode, max_new_tokens=12, gen_batch_size=1)(clips)
    accepted = [s == "accepted" for s in clips.column("status").to_pylist()]
    captions = batched.column("caption_dense").to_pylist()
    assert [c is not None for c in captions] == accepted
    assert captions == single.column("caption_dense").to_pylist()
    assert batched.column("caption_dense_tokens").to_pylist() == single.column("caption_dense_tokens").to_pylist()
    assert len({c for c in captions if c}) > 1  # different clips, different (meaningless) captions


def test_left_padding_mixes_input_lengths_in_one_batch(tiny_vlm, clips):
    stage = make(tiny_vlm, max_new_tokens=4)
    rows = [r for r in clips.to_pylist() if r["status"] == "accepted"]
    small, large = rows[-1], rows[0]
    inputs = stage.model_inputs([large, small], [stage.render(large), stage.render(small)])
    mask = inputs["attention_mask"].tolist()
    assert sum(mask[0]) > sum(mask[1])  # the 320x180 clip has more video tokens
    assert mask[1][0] == 0 and mask[1][-1] == 1  # the shorter one is padded on the left


def test_prompt_template_renders_clip_facts_through_the_chat_template(tiny_vlm, clips):
    stage = make(tiny_vlm, prompt="A {duration_s:.2f} s clip, {width}x{height}, {frames} frames. Describe it.",
                 system_prompt="You caption videos.")
    clip = next(r for r in clips.to_pylist() if r["status"] == "accepted")
    text = stage.render(clip)
    expected = f"A {clip['duration_s']:.2f} s clip, {clip['width']}x{clip['height']}, 4 frames. Describe it."
    assert text == ("<|im_start|>system\nYou caption videos.<|im_end|>\n<|im_start|>user\n"
                    f"<|vision_start|><|video_pad|><|vision_end|>{expected}<|im_end|>\n<|im_start|>assistant\n")
    images = make(tiny_vlm, input_mode="images").render(clip)
    assert images.count("<|image_pad|>") == 4 and "<|video_pad|>" not in images


def test_frames_go_in_with_their_real_timestamps(tiny_vlm, clips):
    stage = make(tiny_vlm)
    clip = next(r for r in clips.to_pylist() if r["status"] == "accepted" and r["start_frame"] > 0)
    inputs = stage.model_inputs([clip], [stage.render(clip)])
    decoded = stage._tokenizer.decode(inputs["input_ids"][0])
    seconds = [float(s) for s in re.findall(r"<(\d+\.\d) seconds>", decoded)]
    offsets = [(i - clip["start_frame"]) / clip["fps"] for i in clip["sample_frame_indices"]]
    pairs = [(offsets[i] + offsets[i + 1]) / 2 for i in range(0, len(offsets), 2)]  # 2-frame tubelets
    assert seconds == pytest.approx(pairs, abs=0.051)
    assert pairs[0] > 0.0 and inputs["video_grid_thw"].tolist()[0][0] == 2


def test_token_limit_truncation_is_flagged(tiny_vlm, clips):
    short = make(tiny_vlm, max_new_tokens=3)(clips)
    longer = make(tiny_vlm, max_new_tokens=10)(clips)
    pairs = [(a, b) for a, b in zip(short.to_pylist(), longer.to_pylist()) if a["status"] == "accepted"]
    assert any(a["caption_dense_truncated"] for a, _ in pairs)
    for a, b in pairs:
        # A caption that used the whole budget is flagged, and goes on when given more.
        assert a["caption_dense_truncated"] == (a["caption_dense_tokens"] == 3)
        if a["caption_dense_truncated"]:
            assert b["caption_dense_tokens"] > 3
        else:
            assert b["caption_dense"] == a["caption_dense"]  # it stopped by itself: same caption


def test_rows_carry_quality_signals_and_caption_version(tiny_vlm, clips):
    pinned = "0c351dd01ed87e9c1b53cbc748cba10e6187ff3b"  # default.yaml's hub pin: a folder loads as itself
    out = make(tiny_vlm, max_new_tokens=8, revision=pinned)(clips)
    other = make(tiny_vlm, max_new_tokens=8, prompt="Describe the clip.")(clips)
    assert set(out.column_names) >= {f.name for f in CATALOG}
    for row, again in zip(out.to_pylist(), other.to_pylist()):
        if row["status"] != "accepted":
            assert all(row[f.name] is None for f in CATALOG)
            continue
        assert row["caption_model"] == tiny_vlm  # not tiny_vlm@<pin>
        assert 0.0 <= row["caption_dense_repetition"] <= 1.0
        assert row["caption_dense_empty"] == (row["caption_dense"] == "")
        settings = json.loads(row["caption_settings"])
        assert settings["max_new_tokens"] == 8 and settings["dtype"] == "float32"
        assert settings["model_class"] == "Qwen3VLForConditionalGeneration"
        assert again["caption_prompt_hash"] != row["caption_prompt_hash"]  # another prompt, another version
    assert stage_throughput(tiny_vlm, clips) > 0


def stage_throughput(model: str, clips: pa.Table) -> float:
    stage = make(model, max_new_tokens=4)
    stage(clips)
    return stage.throughput.tokens_per_s


def test_bad_settings_fail_at_config_time():
    with pytest.raises(ValueError, match=r"^prompt: unknown placeholder \{title\}"):
        Caption(prompt="Describe {title}")
    with pytest.raises(ConfigError, match=r"^stages\.caption\.min_new_tokens: must be between"):
        load_config(None, ["stages.caption.max_new_tokens=4", "stages.caption.min_new_tokens=9"])
    with pytest.raises(ConfigError, match=r"^stages\.caption\.input_mode: must be one of"):
        load_config(None, ["stages.caption.input_mode=audio"])


def test_single_frame_clip_is_captioned(tiny_vlm, clips):
    row = next(r for r in clips.to_pylist() if r["status"] == "accepted")
    frames = np.frombuffer(row["frames"], np.uint8).reshape(row["frames_shape"])[:1]
    one = dict(row, frames=frames.tobytes(), frames_shape=list(frames.shape), sample_frame_indices=[row["start_frame"]])
    out = make(tiny_vlm, max_new_tokens=4)(pa.Table.from_pylist([one], schema=clips.schema))
    assert out.column("caption_dense_tokens").to_pylist() == [4]


def test_decoded_frames_have_the_configured_count_and_size_one_open_per_source(tiny_vlm, clips):
    from stages.video.decode import OPENS

    stage = make(tiny_vlm, max_new_tokens=4, frames_source="decode", max_frames=3, max_fps=2.0, short_side=64)
    rows = [r for r in clips.to_pylist() if r["status"] == "accepted"]
    sources = {r["video"]["source_uri"] for r in rows}
    before = {s: OPENS[s] for s in sources}
    decoded = stage.planned([dict(r) for r in rows])
    for request, frames in stage.decoding(decoded):
        decoded[request.key].update(pixels=frames, sample_frame_indices=request.indices)
    assert {s: OPENS[s] - before[s] for s in sources} == {s: 1 for s in sources}  # several clips each
    for clip in decoded:
        count = min(3, int(clip["duration_s"] * 2.0))
        short = min(clip["width"], clip["height"])
        assert clip["pixels"].shape[0] == count == len(clip["sample_frame_indices"])
        assert min(clip["pixels"].shape[1:3]) == 64 < short
        assert clip["start_frame"] <= min(clip["sample_frame_indices"]) <= max(clip["sample_frame_indices"]) < clip["end_frame"]
    out = stage(clips)
    captions = out.column("caption_dense").to_pylist()
    assert [c is not None for c in captions] == [s == "accepted" for s in clips.column("status").to_pylist()]
    settings = [json.loads(s) for s in out.column("caption_settings").to_pylist() if s]
    assert settings[0]["frames"] == {"source": "decode", "max_frames": 3, "max_fps": 2.0, "short_side": 64}


def test_generation_overlaps_decoding_and_the_model_gets_the_plain_readers_frames(tiny_vlm, clips, monkeypatch):
    """Frames decode in a thread while earlier groups generate; what each group gets is what reading
    the clip alone gives, and the stage counts the time it waited."""
    from stages.video.decode import SpanRequest, anchor_of, read_grouped

    stage = make(tiny_vlm, max_new_tokens=4, frames_source="decode", max_frames=3, short_side=64, gen_batch_size=1)
    seen, generate = {}, stage._generate

    def recording(group, texts):
        for clip in group:
            seen[clip["clip_id"]] = clip["pixels"]
        return generate(group, texts)

    monkeypatch.setattr(stage, "_generate", recording)
    out = stage(clips)
    rows = [r for r in clips.to_pylist() if r["status"] == "accepted"]
    assert set(seen) == {r["clip_id"] for r in rows} and len(rows) >= 3 and stage.input_wait_s >= 0
    for row in rows:  # the plain path: one clip, one read, no thread
        indices, width, height = stage.frame_plan(dict(row))
        [(_, alone)] = read_grouped([(row["video"], SpanRequest(0, indices, width, height, anchor_of(row)))], 1, 60)
        assert np.array_equal(seen[row["clip_id"]], alone), row["clip_id"]
    assert out.column("caption_dense").null_count == clips.num_rows - len(rows)


def test_a_clip_whose_frames_cannot_be_read_is_captioned_from_splits_samples(tiny_vlm, clips, tmp_path, monkeypatch):
    rows = clips.to_pylist()
    broken = next(i for i, r in enumerate(rows) if r["status"] == "accepted")
    rows[broken]["video"] = dict(rows[broken]["video"], source_uri=str(tmp_path / "gone.mp4"))
    stage = make(tiny_vlm, max_new_tokens=4, frames_source="decode", max_frames=3, short_side=64)
    seen, generate = {}, stage._generate

    def recording(group, texts):
        seen.update({c["clip_id"]: c for c in group})
        return generate(group, texts)

    monkeypatch.setattr(stage, "_generate", recording)
    out = stage(pa.Table.from_pylist(rows, schema=clips.schema))
    clip = seen[rows[broken]["clip_id"]]
    assert clip["pixels"] is None and clip["frames_shape"] == rows[broken]["frames_shape"]  # split's samples
    assert out.column("caption_dense")[broken].as_py() is not None
    assert all(c["pixels"] is not None for k, c in seen.items() if k != rows[broken]["clip_id"])


@pytest.mark.parametrize("override, message", [
    ("stages.caption.short_side=8", r"^stages\.caption\.short_side: must be >= 16"),
    ("stages.caption.max_frames=0", r"^stages\.caption\.max_frames: must be >= 1"),
    ("stages.caption.max_fps=0", r"^stages\.caption\.max_fps: must be > 0"),
    ("stages.caption.frames_source=thumbnails", r"^stages\.caption\.frames_source: must be"),
])
def test_frame_settings_are_checked_at_start_naming_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
