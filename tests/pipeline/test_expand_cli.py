"""`vidprep expand "a prompt"` (prompt upsampling) and captions in the catalog after a run."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.catalog.views import query
from pipeline.config import load_config
from pipeline.run.runner import run
from pipeline.kit.synth import write_video
from pipeline.kit.tiny import vlm
from stages.text.quality import strip_stock_opening
from pipeline.kit.tiny.llm import TAUGHT_SYSTEM as SYSTEM

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).parents[2]


def expand(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "expand", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_expand_command_prints_the_upsampled_prompt(json_llm):
    done = expand("a red fox in snow", "--set", f"stages.expand.model={json_llm}",
                  "--set", f"stages.expand.system_prompt={SYSTEM}", "--set", "stages.expand.resources.gpus=0")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "A red fox trotting through deep snow at dawn.\n"


def test_expand_command_says_when_it_falls_back(tiny_llm):
    done = expand("a red fox in snow", "--json", "--set", f"stages.expand.model={tiny_llm}",
                  "--set", "stages.expand.max_new_tokens=8", "--set", "stages.expand.retries=0")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["long"] == "a red fox in snow" and result["status"] == "fallback" and result["attempts"] == 1
    assert result["reason"].startswith("truncated: no end within max_new_tokens=8")
    assert "vidprep expand: fallback (truncated" in done.stderr


def test_expand_command_rejects_a_bad_setting():
    done = expand("a fox", "--set", "stages.expand.retries=-2")
    assert done.returncode == 2 and "stages.expand.retries: must be >= 0" in done.stderr


def test_captions_reach_the_catalog(tmp_path, tmp_path_factory, tiny_llm):
    model = vlm.build(tmp_path_factory.getbasetemp() / "tiny-vlm")["vlm"]
    write_video(tmp_path / "in" / "a.mp4", [60, 72], width=160, height=96, seed=3)
    config = load_config(None, [
        "run.runner=sequential", "stages.split.sample_frames=4", "stages.split.decode_short_side=96",
        f"stages.caption.model={model}", "stages.caption.max_new_tokens=6", "stages.caption.resources.gpus=0",
        f"stages.expand.model={tiny_llm}", "stages.expand.max_new_tokens=8", "stages.expand.retries=0",
        "stages.expand.resources.gpus=0"])
    run(config, str(tmp_path / "in"), tmp_path / "out", progress=False)
    rows = query(tmp_path / "out", "SELECT status, caption_dense, caption_dense_tokens, caption_model, "
                 "caption_long, expand_status, expand_reason, expand_model FROM clips ORDER BY clip_index").to_pylist()
    assert len(rows) == 2 and all(r["status"] == "accepted" for r in rows)
    for row in rows:
        assert row["caption_dense_tokens"] == 6 and row["caption_model"] == model
        assert row["expand_status"] == "fallback" and row["expand_reason"].startswith("truncated")
        assert row["caption_long"] == strip_stock_opening(row["caption_dense"])  # the fallback: the dense caption
        assert row["expand_model"] == tiny_llm
