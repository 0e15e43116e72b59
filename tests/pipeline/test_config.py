import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.typed import ConfigError

ROOT = Path(__file__).parents[2]


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_load(monkeypatch):
    from pipeline.kit.tiny import clip

    clip.build(ROOT / "demo" / "models" / "clip")  # demo.yaml's CLIP files are checked at load (make demo builds them)
    monkeypatch.chdir(ROOT)  # demo.yaml's model paths are relative to the repository root
    for name in ("default.yaml", "demo.yaml"):
        config = load_config(ROOT / "configs" / name)
        assert [s.name for s in config.plan()][:2] == ["probe", "split"]


def test_every_hub_model_in_the_default_config_is_pinned_to_a_commit():
    import re

    stages = load_config(ROOT / "configs" / "default.yaml").stages
    pins = {"caption": [("model", "revision")], "expand": [("model", "revision")],
            "encode": [("vae", "vae_revision"), ("text_encoder", "text_revision")]}
    for stage, pairs in pins.items():
        for model, revision in pairs:
            ref, commit = getattr(stages[stage], model), getattr(stages[stage], revision)
            assert "/" in ref and not Path(ref).exists(), (stage, model, ref)  # a hub id
            assert re.fullmatch(r"[0-9a-f]{40}", commit or ""), f"stages.{stage}.{revision}: {commit!r}"


def test_overrides_are_typed_and_applied(tmp_path):
    config = load_config(write(tmp_path, "stages:\n  split:\n    max_clip_s: 8\n"),
                         ["stages.split.detector=content", "run.wave_size=3", "stages.split.resources.cpus=2"])
    split = config.stages["split"]
    assert (split.detector, split.max_clip_s, split.resources.cpus) == ("content", 8.0, 2.0)
    assert config.run.wave_size == 3
    assert load_config(None, ["stages.split.min_clip_s=3e-1"]).stages["split"].min_clip_s == 0.3  # YAML: a string


@pytest.mark.parametrize("text, overrides, message", [
    ("stages:\n  split:\n    max_clips: 3\n", [], r"^stages\.split\.max_clips: unknown key"),
    ("", ["stages.split.min_clip_s=-1"], r"^stages\.split\.min_clip_s: must be >= 0"),
    ("", ["stages.split.detector=magic"], r"^stages\.split\.detector: must be one of"),
    ("", ["run.wave_size=many"], r"^run\.wave_size: expected an integer"),
    ("", ["run.wave_size=0"], r"^run\.wave_size: must be >= 1"),
    ("", ["stages.split.resources.gpus=-1"], r"^stages\.split\.resources\.gpus: must be >= 0"),
    ("stages:\n  dance: {}\n", [], r"^stages\.dance: unknown stage"),
    ("stages:\n  split: false\n", [], r"^stages\.split: this stage is required"),
    ("outputs: 1\n", [], r"^outputs: unknown key"),
    ("run: [1, 2]\n", [], r"^run: expected a mapping"),
    ("", ["novalue"], r"expected key=value"),
    ("stages: {split: {max_clip_s: 1, min_clip_s: 2}}\n", [], r"^stages\.split\.max_clip_s: must be >= min_clip_s"),
])
def test_bad_config_fails_naming_the_field(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), overrides)


def test_unsafe_yaml_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "run: !!python/object/apply:os.system ['true']\n"))


def test_cli_fails_at_start_without_touching_the_output(tmp_path, corpus_dir):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "-i", corpus_dir, "-o", str(out),
                           "--set", "stages.split.trim_frames=-3"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "stages.split.trim_frames: must be >= 0" in proc.stderr
    assert not out.exists()


def test_text_embeddings_without_a_caption_source_fail_at_start():
    with pytest.raises(ConfigError, match="stages.encode.text_encoder: encode embeds caption_long/caption_short"):
        load_config(None, ["stages.encode.vae_kind=wan"])  # encode with its default T5, no caption/expand
    load_config(None, ["stages.encode.text_encoder=null"])  # latents without text, on purpose


def test_scheduling_and_watchdog_settings_leave_the_fingerprint_alone():
    base = load_config(None).fingerprint()
    assert load_config(None, ["stages.split.decode_stall_s=30", "stages.split.resources.cpus=2"]).fingerprint() == base
    assert load_config(None, ["stages.split.min_clip_s=3"]).fingerprint() != base


def test_model_paths_become_absolute_and_nothing_else_does(tmp_path, monkeypatch):
    (tmp_path / "models" / "vlm").mkdir(parents=True)
    (tmp_path / "video").mkdir()  # a folder named like caption.input_mode's value
    monkeypatch.chdir(tmp_path)
    config = load_config(None, ["stages.caption.model=models/vlm", "stages.caption.input_mode=video"])
    assert config.stages["caption"].model == str(tmp_path / "models" / "vlm")  # workers run elsewhere
    assert config.stages["caption"].input_mode == "video"
    assert load_config(None, ["stages.caption.model=Qwen/Qwen3-VL-8B-Instruct"]).stages["caption"].model \
        == "Qwen/Qwen3-VL-8B-Instruct"  # a hub id stays one
