"""A failing model batch costs the failing row, not the run (pipeline/run/isolation.py)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.kit.synth import scene_frames
from pipeline.run.isolation import call_isolated, reason_for
from stages.clip_score import ClipScore

ROW = pa.schema([("status", pa.string()), ("reason", pa.string()), ("source_uri", pa.string()),
                 ("frames", pa.binary()), ("frames_shape", pa.list_(pa.int32()))])
CLIPS = [scene_frames(np.random.default_rng(seed), 4, 96, 64) for seed in range(7)]
POISON = 4  # this row's frames make the "model" raise


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    from pipeline.kit.tiny.clip import build

    models = build(tmp_path_factory.mktemp("models") / "clip")
    stage = ClipScore(model="vidprep-tiny-vit", model_config=models["clip_config"], pretrained=models["clip"],
                      aesthetic=models["clip_aesthetic"], sidecar_text=False)
    stage.setup()
    return stage


def batch() -> pa.Table:
    rows = [{"status": "accepted", "source_uri": f"/in/v{i}.mp4", "frames": f.tobytes(), "frames_shape": list(f.shape)}
            for i, f in enumerate(CLIPS)]
    rows[1] = {"status": "rejected", "reason": "too_short", "source_uri": "/in/v1.mp4"}
    return pa.Table.from_pylist(rows, schema=ROW)


def test_oom_on_big_batches_and_a_poison_row_cost_only_the_poison_row(stage, monkeypatch):
    clean = stage(batch())
    embed = stage.embed
    calls = []

    def flaky_embed(clips):
        calls.append(len(clips))
        if len(clips) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if any(np.array_equal(frames, CLIPS[POISON]) for frames in clips.values()):
            raise ValueError("shape mismatch in the vision tower")
        return embed(clips)

    monkeypatch.setattr(stage, "embed", flaky_embed)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        stage(batch())  # what used to end the run
    out = call_isolated(stage, batch())
    assert out.num_rows == clean.num_rows and calls[0] > 2
    status, reason = out.column("status").to_pylist(), out.column("reason").to_pylist()
    assert status == ["accepted", "rejected", "accepted", "accepted", "error", "accepted", "accepted"]
    assert reason[POISON] == "model_error: ValueError: shape mismatch in the vision tower"
    assert reason[1] == "too_short"
    assert out.column("clip_embedding")[POISON].as_py() is None
    for i in (0, 2, 3, 5, 6):  # every other clip is as in a clean run
        assert out.column("clip_embedding")[i].as_py() == clean.column("clip_embedding")[i].as_py()


def test_reasons_are_coded():
    assert reason_for(torch.cuda.OutOfMemoryError("CUDA out of memory")) == "oom"
    assert reason_for(MemoryError()) == "oom"
    assert reason_for(RuntimeError("boom\n  at line 3")) == "model_error: RuntimeError: boom at line 3"


def test_a_cheap_stage_still_raises(corpus):
    from stages.filter import Filter

    stage = Filter(keep="clip_aesthetic >= 4.5")
    with pytest.raises(Exception):
        call_isolated(stage, pa.table({"status": ["accepted"]}))  # a bug in a task stage is not hidden


def test_the_runners_isolate_model_stages(stage, monkeypatch):
    from pipeline.run.executors import _StageActor, in_batches

    embed = stage.embed
    monkeypatch.setattr(stage, "embed", lambda clips: (_ for _ in ()).throw(ValueError("poison"))
                        if any(np.array_equal(f, CLIPS[POISON]) for f in clips.values()) else embed(clips))
    sequential = in_batches(stage, batch())  # the sequential runner's call
    actor = _StageActor.__new__(_StageActor)  # the Ray actor's call, without loading the model again
    actor.stage = stage
    for out in (sequential, actor(batch())):
        assert out.column("status").to_pylist().count("error") == 1
        assert out.column("reason")[POISON].as_py() == "model_error: ValueError: poison"
