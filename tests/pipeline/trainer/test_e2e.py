"""End to end: committed shards (tiny real VAE and T5 named in their metadata) → `vidprep train` → `vidprep sample` → mp4."""
from __future__ import annotations

import json
from pathlib import Path

import av
import pytest

from pipeline.cli import main as cli
from pipeline.kit.tiny import text as tiny_text
from pipeline.kit.tiny import vae as tiny_vae
from pipeline.trainer.synthetic import write_shards

BABY = str(Path(__file__).parents[3] / "configs" / "train_baby.yaml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e")
    vae = tiny_vae.build(folder / "vae")["vae_kl"]  # AutoencoderKL, spatial stride 4, 4 latent channels
    t5 = tiny_text.build(folder / "t5")["text_t5"]  # d_model 32
    meta = {"vae": vae, "vae_class": "AutoencoderKL", "spatial_stride": 4, "temporal_stride": 1,
            "scaling_factor": 0.5, "shift_factor": 0.1, "text_encoder": t5, "text_kind": "t5", "target_fps": 8.0}
    write_shards(folder / "out", {"3x32x32": (4, 3, 8, 8), "1x32x48": (4, 1, 8, 12)}, {"3x32x32": 12, "1x32x48": 8},
                 row_group_rows=4, text_dim=32, meta=meta)
    results = folder / "results"
    assert cli(["train", "--data", str(folder / "out" / "shards"), "-c", BABY, "--results", str(results),
                "--steps", "3", "--set", "data.num_workers=0", "--set", "train.device=cpu"]) == 0
    return folder, results


def test_train_writes_a_checkpoint_that_names_the_data(trained):
    folder, results = trained
    summary = json.loads((results / "summary.json").read_text())
    assert summary["steps"] == 3 and Path(summary["checkpoint"]).name == "0000003"
    config = json.loads((Path(summary["checkpoint"]) / "config.json").read_text())
    assert config["data"]["latents"]["vae_class"] == "AutoencoderKL" and config["data"]["text_dim"] == 32
    assert config["model"]["depth"] == 4  # the baby config


@pytest.mark.parametrize("bucket, frames, size", [(None, 3, (32, 32)), ("5x32x48", 5, (32, 48))])
def test_sample_writes_a_playable_mp4(trained, capsys, bucket, frames, size):
    folder, results = trained
    out = folder / f"sample-{bucket}.mp4"
    argv = ["sample", "a red fox running through snow", "--checkpoint", str(results), "--out", str(out),
            "--steps", "3", "--device", "cpu"] + (["--bucket", bucket] if bucket else [])
    assert cli(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["frames"] == frames and result["prompt"] == "a red fox running through snow"
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        assert stream.codec_context.name in ("h264", "mpeg4") and float(stream.average_rate) == 8.0
    assert len(decoded) == frames and decoded[0].shape == (*size, 3)


def test_upsample_uses_the_expander_with_the_datas_expand_settings(trained, monkeypatch, capsys):
    import stages.expand

    folder, results = trained
    (folder / "out" / "run.json").write_text(json.dumps({"config": {"stages": {"expand": {"max_new_tokens": 99}}}}))
    calls = []
    monkeypatch.setattr(stages.expand, "upsample", lambda prompt, stage: calls.append((prompt, stage)) or "LONG " + prompt)
    assert cli(["sample", "a fox", "--checkpoint", str(results), "--out", str(folder / "up.mp4"), "--steps", "1",
                "--device", "cpu", "--upsample"]) == 0
    assert json.loads(capsys.readouterr().out)["prompt"] == "LONG a fox"
    assert calls[0][0] == "a fox" and calls[0][1].max_new_tokens == 99  # the expander that wrote the captions
