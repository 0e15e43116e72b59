"""The plan against the cluster: gpus: auto shares, the check before any work, and the default config on
declared GPUs (Ray started with num_gpus=N on this CPU machine, the shape a GPU user runs)."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.catalog import connect
from pipeline.config import load_config
from pipeline.run import plan
from pipeline.typed import ConfigError

ROOT = Path(__file__).parents[3]
DEFAULT = ROOT / "configs" / "default.yaml"


MODEL_STAGES = ("clip_score", "caption", "expand", "encode")  # gpus: auto in the default config


def _gpu_stages(cluster):
    stages = load_config(DEFAULT).plan()
    plan.assign_auto_gpus(stages, cluster)
    return {s.name: (s.resources.gpus, s.resources.concurrency) for s in stages if s.name in MODEL_STAGES}


def test_auto_shares_one_gpu_between_the_four_model_stages():
    shares = _gpu_stages(plan.Cluster(cpus=16, gpus=1))
    assert shares == {name: (0.25, 1) for name in ("clip_score", "caption", "expand", "encode")}


def test_auto_uses_all_eight_gpus_and_gives_captioning_the_most():
    shares = _gpu_stages(plan.Cluster(cpus=96, gpus=8))
    assert sum(g * n for g, n in shares.values()) == 8
    assert all(g == 1.0 for g, _ in shares.values())
    assert max(shares, key=lambda name: shares[name][1]) == "caption"
    assert shares == {"clip_score": (1.0, 1), "caption": (1.0, 4), "expand": (1.0, 2), "encode": (1.0, 1)}


def test_auto_on_three_gpus_uses_halves_that_pack():
    shares = _gpu_stages(plan.Cluster(cpus=96, gpus=3))
    assert {g for g, _ in shares.values()} == {0.5} and sum(g * n for g, n in shares.values()) == 3


def test_explicit_numbers_win_and_are_counted_first():
    stages = load_config(DEFAULT, ["stages.caption.resources.gpus=1", "stages.caption.resources.concurrency=1"]).plan()
    plan.assign_auto_gpus(stages, plan.Cluster(cpus=32, gpus=2))
    by_name = {s.name: s.resources for s in stages}
    assert (by_name["caption"].gpus, by_name["caption"].concurrency) == (1, 1)
    assert sum(by_name[n].gpus * by_name[n].concurrency for n in ("clip_score", "expand", "encode")) == 1


def test_no_gpu_runs_auto_stages_on_cpu():
    assert set(_gpu_stages(plan.Cluster(cpus=8, gpus=0)).values()) == {(0.0, 1)}


def test_check_names_the_stage_and_field_of_an_unschedulable_plan():
    fixed = [f"stages.{n}.resources.gpus=1" for n in ("clip_score", "caption", "expand", "encode")]
    stages = load_config(DEFAULT, fixed + ["stages.encode.resources.batch_size=null"]).plan()
    problems = plan.check(stages, plan.Cluster(cpus=16, gpus=1))
    assert any(p.startswith("stages.encode.resources.batch_size:") for p in problems), problems
    assert any("need 4 GPUs together" in p and "caption 1×1" in p for p in problems), problems
    with pytest.raises(ConfigError, match="does not fit the cluster"):
        plan.fit(stages, plan.Cluster(cpus=16, gpus=1))


def test_vidprep_plan_exits_2_at_once_on_an_impossible_plan():
    fixed = [a for n in ("clip_score", "caption", "expand", "encode") for a in ("--set", f"stages.{n}.resources.gpus=1")]
    cmd = [sys.executable, "-m", "pipeline.cli", "plan", "-c", str(DEFAULT), "--gpus", "1", "--cpus", "16", *fixed]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    assert "stages.*.resources.gpus: the actor pools need 4 GPUs" in done.stderr and "caption 1×1" in done.stderr
    ok = subprocess.run(cmd[:10], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert ok.returncode == 0 and "the plan fits" in ok.stdout, ok.stderr


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from pipeline.kit.tiny import build_all

    return build_all(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def models_in_range(tiny_models, tmp_path_factory) -> dict[str, str]:
    """The tiny models, with the tiny aesthetic head's output moved into the real head's range (~5 of 10):
    random, it scores about -0.2, and default.yaml's `clip_aesthetic >= 4.5` would reject every clip, so
    caption, expand and encode would never see one."""
    import torch

    head = torch.load(tiny_models["clip_aesthetic"], weights_only=True)
    head["layers.7.bias"] = head["layers.7.bias"] + 5.5
    path = tmp_path_factory.mktemp("head") / "aesthetic_head.pth"
    torch.save(head, path)
    return {**tiny_models, "clip_aesthetic": str(path)}


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def default_with_tiny_models(m: dict[str, str]) -> list[str]:
    """configs/default.yaml as shipped, with only its model references pointed at the tiny local models."""
    return [f"stages.clip_score.model=vidprep-tiny-vit", f"stages.clip_score.model_config={m['clip_config']}",
            f"stages.clip_score.pretrained={m['clip']}", f"stages.clip_score.aesthetic={m['clip_aesthetic']}",
            f"stages.clip_score.aesthetic_clip=vidprep-tiny-vit/{m['clip']}",  # the tiny head's own CLIP
            f"stages.clip_score.aesthetic_sha256={_sha256(m['clip_aesthetic'])}",  # the pin follows the file
            f"stages.caption.model={m['vlm']}", f"stages.expand.model={m['llm']}",
            "stages.expand.clip_model=vidprep-tiny-vit", f"stages.expand.clip_model_config={m['clip_config']}",
            f"stages.expand.clip_pretrained={m['clip']}",
            f"stages.encode.vae={m['vae_wan']}", "stages.encode.vae_subfolder=null",
            f"stages.encode.text_encoder={m['text_t5']}"]


@pytest.mark.ray
def test_default_config_runs_to_the_end_on_a_one_gpu_node(models_in_range, corpus_dir, tmp_path):
    """The hang: four model stages at gpus: 1 on one GPU. With gpus: auto they share it and the run ends."""
    import ray

    from pipeline.run.runner import run

    ray.init(address="local", num_cpus=16, num_gpus=1, include_dashboard=False)  # a 1-GPU workstation
    try:
        fixed = [f"stages.{n}.resources.gpus=1" for n in ("clip_score", "caption", "expand", "encode")]
        stuck = load_config(DEFAULT, default_with_tiny_models(models_in_range) + fixed)  # the old default's shares
        with pytest.raises(ConfigError, match="the actor pools need 4 GPUs together"):
            run(stuck, corpus_dir, tmp_path / "refused", progress=False)  # stops at start instead of hanging
        assert not list((tmp_path / "refused").glob("_commits/*.json"))
        gpus_used = _default_run_uses(models_in_range, corpus_dir, tmp_path / "out")
    finally:
        ray.shutdown()
    assert gpus_used == 1
    # Accepted clips went through every model stage as default.yaml sets them up (caption decoding its
    # own frames, expand, encode with T5): rows name the model folders (default.yaml's hub pins don't
    # apply to folders) and every accepted clip has its latent (clips the end-of-run pass rejected later,
    # near-duplicates within the run, keep theirs).
    con = connect(tmp_path / "out")
    accepted = con.execute("SELECT clip_id, caption_model, caption_settings, expand_model FROM clips "
                           "WHERE status = 'accepted' ORDER BY 1").fetchall()
    assert accepted, con.execute("SELECT reason, count(*) FROM clips GROUP BY 1").fetchall()
    assert {(c, e) for _, c, _, e in accepted} == {(models_in_range["vlm"], models_in_range["llm"])}
    assert all(json.loads(s)["frames"]["source"] == "decode" for _, _, s, _ in accepted)
    latents = con.execute("SELECT clip_id FROM shards WHERE latent IS NOT NULL ORDER BY 1").fetchall()
    assert {c for c, *_ in accepted} <= {c for (c,) in latents}


@pytest.mark.ray
def test_default_config_runs_to_the_end_on_an_eight_gpu_node_using_all_eight(tiny_models, corpus_dir, tmp_path):
    import ray

    from pipeline.run.runner import run

    ray.init(address="local", num_cpus=96, num_gpus=8, include_dashboard=False)  # an 8-GPU node
    try:
        assert _default_run_uses(tiny_models, corpus_dir, tmp_path / "out", caption_actors=4) == 8
    finally:
        ray.shutdown()


def _default_run_uses(tiny_models, corpus_dir, out, caption_actors: int = 1) -> float:
    """Run the default config on the Ray started by the test; the GPUs its actor pools were given."""
    from pipeline.report.summary import run_summary
    from pipeline.run.runner import run

    config = load_config(DEFAULT, default_with_tiny_models(tiny_models) + ["run.wave_size=2"])
    result = run(config, corpus_dir, out, progress=False)
    stages = {s.name: s.resources for s in config.plan()}
    assert result.waves == 2 and result.processed == 3 and stages["caption"].concurrency == caption_actors
    recorded = {p["stage"]: p for p in json.loads((out / "run.json").read_text())["plan"]}  # what a user reads
    assert (recorded["caption"]["gpus"], recorded["caption"]["actors"]) == (stages["caption"].gpus, caption_actors)
    assert recorded["caption"]["device"] == "cuda" and recorded["split"] == {**recorded["split"], "device": "cpu"}
    # What the workers actually ran on: every actor of every model stage reported. GPUs were only declared
    # to Ray, torch sees none: run.json says cpu (and float32, auto's CPU choice), it does not echo the plan.
    used = json.loads((out / "run.json").read_text())["devices"]
    workers = {}
    for entry in used:
        workers.setdefault(entry["stage"], set()).add(entry["workers"])
    assert set(workers) == {"clip_score", "caption", "expand", "encode"}, used
    assert workers["caption"] == {caption_actors}
    assert {(e["device"], e["dtype"]) for e in used} == {("cpu", "float32")}, used
    assert "device: caption" in run_summary(result)
    return sum(stages[n].gpus * stages[n].concurrency for n in ("clip_score", "caption", "expand", "encode"))
