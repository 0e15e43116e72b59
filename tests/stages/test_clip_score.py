"""Stage clip_score: a tiny open_clip model, saved to disk and loaded back through the user's path."""
import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.config import load_config
from pipeline.kit.synth import scene_frames
from pipeline.typed import ConfigError
from stages.clip_score import ClipScore, read_sidecar

SCORES = ["clip_aesthetic", "clip_text_overlay", "clip_watermark", "clip_black", "clip_blurry", "clip_still",
          "clip_screen_recording", "clip_frame_consistency", "clip_motion", "clip_text_similarity"]
ROW = pa.schema([("status", pa.string()), ("reason", pa.string()), ("source_uri", pa.string()),
                 ("frames", pa.binary()), ("frames_shape", pa.list_(pa.int32()))])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from pipeline.kit.tiny.clip import build

    return build(tmp_path_factory.mktemp("models") / "clip")


def make_stage(models, **extra) -> ClipScore:
    settings = {"model": "vidprep-tiny-vit", "model_config": models["clip_config"], "pretrained": models["clip"],
                "aesthetic": models["clip_aesthetic"], **extra}
    stage = ClipScore(**settings)
    stage.setup()
    return stage


@pytest.fixture(scope="module")
def stage(models):
    return make_stage(models)


def frames(seed: int, k: int = 4, width: int = 160, height: int = 96) -> np.ndarray:
    return scene_frames(np.random.default_rng(seed), k, width, height)  # (K, H, W, 3) uint8


def batch(clips, tmp_path=None, rejected_at=()) -> pa.Table:
    rows = []
    for i, f in enumerate(clips):
        uri = str(tmp_path / f"v{i}.mp4") if tmp_path else f"/nowhere/v{i}.mp4"
        if i in rejected_at:
            rows.append({"status": "rejected", "reason": "too_short", "source_uri": uri})
        else:
            rows.append({"status": "accepted", "source_uri": uri, "frames": f.tobytes(), "frames_shape": list(f.shape)})
    return pa.Table.from_pylist(rows, schema=ROW)


CLIPS = [frames(0), frames(1, width=200, height=112), frames(2), frames(3, k=6), frames(4, width=200, height=112)]


def test_model_is_open_clip_loaded_from_the_saved_file(stage, models):
    import open_clip

    assert isinstance(stage.clip.model, open_clip.model.CLIP)
    assert isinstance(stage.clip.model.visual, open_clip.transformer.VisionTransformer)
    saved = torch.load(models["clip"], weights_only=True)
    loaded = stage.clip.model.state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert stage.clip.embed_dim == 32 and stage.clip.image_size == (64, 64)


def test_preprocessing_matches_open_clips_own_transform(stage):
    """Tensor resize + crop + normalise ≈ open_clip's PIL pipeline (same model, same frames)."""
    import open_clip
    from PIL import Image

    transform = open_clip.image_transform(stage.clip.image_size, is_train=False, mean=stage.clip.mean,
                                          std=stage.clip.std)
    clip = frames(5, width=200, height=112)
    reference = torch.stack([transform(Image.fromarray(f)) for f in clip])  # (K, 3, 64, 64)
    ours = stage.clip.preprocess(torch.from_numpy(clip))
    assert ours.shape == reference.shape
    assert float((ours - reference).abs().mean()) < 0.02  # PIL vs torch bicubic differ by rounding only
    cos = (stage.clip.encode_pixels(ours) * stage.clip.encode_pixels(reference)).sum(1)
    assert float(cos.min()) > 0.999


def test_a_clip_scored_alone_equals_it_scored_in_a_batch(models, stage):
    table = batch(CLIPS, rejected_at=(2,))
    together = make_stage(models, images_per_forward=3)(table)  # forwards cross clip boundaries
    for i in range(table.num_rows):
        alone = stage(table.slice(i, 1))
        for name in SCORES:
            a, b = alone.column(name)[0].as_py(), together.column(name)[i].as_py()
            assert (a is None) == (b is None), name
            if a is not None:
                assert abs(a - b) <= 1e-5, (i, name, a, b)
        a, b = alone.column("clip_embedding")[0].as_py(), together.column("clip_embedding")[i].as_py()
        if a is not None:
            assert np.abs(np.subtract(a, b)).max() <= 1e-3  # float16: at most one unit in the last place


def test_scores_are_deterministic(models, stage):
    table = batch(CLIPS)
    assert make_stage(models)(table).equals(stage(table))


def test_scores_follow_their_definitions(stage, models):
    from stages.models.clip import aesthetic_head

    clip = frames(7, k=5)
    out = stage(batch([clip])).to_pylist()[0]
    per_frame = stage.clip.encode_frames(clip)  # (K, D) unit
    mean = per_frame.mean(0) / np.linalg.norm(per_frame.mean(0))
    assert np.allclose(out["clip_embedding"], mean, atol=1e-3)
    sims = per_frame @ per_frame.T
    assert out["clip_frame_consistency"] == pytest.approx(min(sims[i, j] for i in range(5) for j in range(i + 1, 5)),
                                                          abs=1e-5)
    assert out["clip_motion"] == pytest.approx(1 - np.mean([sims[i, i + 1] for i in range(4)]), abs=1e-5)
    texts = stage.clip.encode_texts(["a black screen", "a blank screen"]).mean(0)
    neutral = stage.clip.encode_texts(["a video frame"])[0]
    texts, neutral = texts / np.linalg.norm(texts), neutral / np.linalg.norm(neutral)
    logits = stage.clip.logit_scale * (per_frame @ texts - per_frame @ neutral)
    assert out["clip_black"] == pytest.approx(float(np.mean(1 / (1 + np.exp(-logits)))), abs=1e-5)
    head = aesthetic_head(32)  # built independently from the saved state dict
    head.load_state_dict({k.removeprefix("layers."): v for k, v in
                          torch.load(models["clip_aesthetic"], weights_only=True).items()})
    expected = head.eval()(torch.from_numpy(per_frame)).mean().item()
    assert out["clip_aesthetic"] == pytest.approx(expected, abs=1e-5)
    still = stage(batch([np.repeat(clip[:1], 4, axis=0)])).to_pylist()[0]  # one frame, four times
    assert still["clip_frame_consistency"] == pytest.approx(1.0, abs=1e-5)
    assert still["clip_motion"] == pytest.approx(0.0, abs=1e-5)


def test_rejected_rows_pass_through_with_null_scores(stage):
    table = batch(CLIPS[:3], rejected_at=(1,))
    out = stage(table)
    assert out.select(ROW.names).equals(table)
    row = out.slice(1, 1).to_pylist()[0]
    assert all(row[name] is None for name in SCORES + ["clip_embedding"])
    assert all(out.column(name)[0].is_valid for name in SCORES[:-1])  # accepted: scored (no sidecar text)


def test_no_aesthetic_head_means_null_aesthetic(models):
    out = make_stage(models, aesthetic=None)(batch(CLIPS[:1]))
    assert out.column("clip_aesthetic")[0].as_py() is None and out.column("clip_motion")[0].is_valid


def test_text_similarity_uses_the_sidecar(stage, tmp_path):
    (tmp_path / "v0.txt").write_text("  a red ball bouncing on a beach \n")
    (tmp_path / "v1.json").write_text(json.dumps({"title": "ignored", "caption": "a kitchen"}))
    assert read_sidecar(str(tmp_path / "v0.mp4")) == "a red ball bouncing on a beach"
    assert read_sidecar(str(tmp_path / "v1.mp4")) == "a kitchen"
    assert read_sidecar(str(tmp_path / "v2.mp4")) is None
    out = stage(batch(CLIPS[:3], tmp_path)).to_pylist()
    for row, text in zip(out, ["a red ball bouncing on a beach", "a kitchen"]):
        expected = np.dot(np.asarray(row["clip_embedding"], np.float32), stage.clip.encode_texts([text])[0])
        assert row["clip_text_similarity"] == pytest.approx(float(expected), abs=2e-3)  # float16 embedding
    assert out[2]["clip_text_similarity"] is None


def test_custom_prompts_become_columns(models):
    stage = ClipScore(model="vidprep-tiny-vit", model_config=models["clip_config"], pretrained=models["clip"],
                      prompts={"cartoon": "a cartoon", "still": None})
    names = [f.name for f in stage.catalog_fields]
    assert "clip_cartoon" in names and "clip_still" not in names and "clip_black" in names


@pytest.mark.parametrize("override, message", [
    ("stages.clip_score.model=NoSuchNet", "stages.clip_score.model: 'NoSuchNet' is not an open_clip model"),
    ("stages.clip_score.pretrained=/no/such/weights.pt", "stages.clip_score.pretrained: no such file"),
    ("stages.clip_score.aesthetic=/no/such/head.pth", "stages.clip_score.aesthetic: no such file"),
    ("stages.clip_score.prompts.Bad-Name=x", "stages.clip_score.prompts: 'Bad-Name'"),
    ("stages.clip_score.prompts.motion=x", "stages.clip_score.prompts: 'motion' is taken"),
    ("stages.clip_score.images_per_forward=0", "stages.clip_score.images_per_forward: must be >= 1"),
    ("stages.clip_score.dtype=half", "stages.clip_score.dtype: must be one of"),
    ("stages.clip_score.model_config=/no/such.json", "stages.clip_score.model_config: no such .json file"),
])
def test_bad_settings_fail_at_config_time(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value).startswith(message), str(err.value)


def test_a_head_for_another_embedding_size_fails_at_setup(models, tmp_path):
    from stages.models.clip import aesthetic_head

    wrong = tmp_path / "head768.pth"
    torch.save({f"layers.{k}": v for k, v in aesthetic_head(768).state_dict().items()}, wrong)
    with pytest.raises(ValueError, match="the head takes 768-d embeddings, the CLIP model gives 32-d"):
        make_stage(models, aesthetic=str(wrong))
