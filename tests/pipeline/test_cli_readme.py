"""Every `vidprep` line in the README's code blocks runs as written on a demo output.

Paths are substituted (the README's output folders → one demo output built once for this module,
its inputs → the demo's videos, configs that name hub models → configs/demo.yaml pointed at the
tiny models), and each line runs as the `vidprep` command in a scratch folder. A line the README
shows failing (`$ vidprep ...` followed by its error) must fail with that error.

Excluded, with the reason:
- lines with `--ray-address auto`: they join a running Ray cluster, and there is none here;
- `vidprep bench` appears only in prose (it runs for hours);
Changed to stay cheap, and said here:
- `vidprep run` lines use `--runner sequential` (tests/pipeline/run/test_console.py runs the Ray
  plan), read one of the demo's videos, and each gets its own new output folder (the README shows
  them as alternatives);
- `vidprep train --steps 200` runs 2 steps (the command and its files are the same).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
README = REPO / "README.md"
pytestmark = pytest.mark.timeout(1200)


def readme_commands() -> list[tuple[str, str | None]]:
    """(command, expected error or None) for every `vidprep` line in the README's code blocks."""
    commands, fenced, block, lines = [], False, False, README.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            fenced = not fenced
            block = fenced and line.strip() in ("```", "```bash")  # shell blocks, not python
            i += 1
            continue
        text = line.strip()
        shown = text.startswith("$ vidprep ")
        if block and (text.startswith("vidprep ") or shown):
            command = text[2:] if shown else text
            while command.endswith("\\") or command.count('"') % 2:  # continuation, or a quote still open
                i += 1
                command = command.rstrip("\\").rstrip() + " " + lines[i].strip()
            expected = lines[i + 1].strip() if shown else None  # the README prints the error it gets
            commands.append((command, expected))
            i += 1 if shown else 0  # that line is output, not a command
        i += 1
    return commands


def test_the_readme_has_the_commands_this_test_runs():
    names = {shlex.split(c, comments=True)[1] for c, _ in readme_commands()}
    assert {"run", "query", "refilter", "search", "report", "expand", "train", "sample"} <= names


@pytest.fixture(scope="module")
def demo(tmp_path_factory, demo_material) -> dict[str, Path]:
    """The demo's videos, tiny models, config, and one output made from them (sequential runner)."""
    root, config, videos = tmp_path_factory.mktemp("readme"), demo_material["config"], demo_material["videos"]
    done = vidprep(["run", "-c", str(config), "-i", str(videos), "-o", str(root / "out"), "--runner", "sequential"], root)
    assert done.returncode == 0, done.stderr[-3000:]
    shutil.copytree(root / "out", root / "pristine")
    (root / "one-video").mkdir()  # `vidprep run` lines: the command as written, on one of the demo's videos
    shutil.copy(videos / "beach.mp4", root / "one-video")
    return {"root": root, "videos": videos, "one_video": root / "one-video", "config": config, "out": root / "out", "pristine": root / "pristine",
            "models": demo_material["root"] / "models"}


def vidprep(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=900)


def substituted(command: str, demo: dict[str, Path], index: int) -> list[str] | None:
    args = shlex.split(command, comments=True)[1:]
    if "--ray-address" in args:
        return None  # needs a running cluster
    outputs = {"demo/out", "/data/out", "/shared/out", "OUT"}
    fresh = str(demo["root"] / f"run-{index}")  # `vidprep run` lines: a new output each
    mapped = []
    for arg in args:
        if arg in outputs:
            arg = fresh if args[0] == "run" else str(demo["out"])
        elif arg in ("/data/raw", "s3://bucket/raw"):
            arg = str(demo["one_video"] if args[0] == "run" else demo["videos"])
        elif arg in ("configs/default.yaml", "my.yaml"):
            arg = str(demo["config"])  # its models are hub ids; the demo's are the same classes, tiny
        elif arg.startswith("configs/"):
            arg = str(REPO / arg)
        mapped.append(arg)
    if args[0] == "run" and "--runner" not in args:
        mapped += ["--runner", "sequential"]
    if args[0] == "expand" and "--config" not in args and "-c" not in args:
        mapped += ["--config", str(demo["config"])]
    if args[0] == "train" and "--steps" in mapped:
        mapped[mapped.index("--steps") + 1] = "2"
    return mapped


def test_every_vidprep_line_in_the_readme_runs_as_written(demo):
    failures, ran = [], []
    for index, (command, expected) in enumerate(readme_commands()):
        # Each line on the demo output as `make demo` leaves it (a refilter line sticks; train after it
        # would see other statuses); files a line writes in the working folder stay (train → sample).
        shutil.rmtree(demo["out"])
        shutil.copytree(demo["pristine"], demo["out"])
        args = substituted(command, demo, index)
        if args is None:
            continue
        done = vidprep(args, demo["root"])
        ran.append(command)
        if expected is None and done.returncode != 0:
            failures.append(f"{command}\n  → exit {done.returncode}: {done.stderr.strip()[-1500:]}")
        elif expected is not None and (done.returncode != 2 or done.stderr.strip().splitlines()[-1] != expected):
            failures.append(f"{command}\n  → expected {expected!r}, got exit {done.returncode}: {done.stderr[-500:]}")
    assert not failures, "\n".join(failures)
    assert len(ran) >= 12


def test_csv_output_writes_list_columns_as_json_text(demo):
    done = vidprep(["query", str(demo["out"]), "SELECT source_uri, cuts FROM videos ORDER BY 1", "--format", "csv"],
                   demo["root"])
    assert done.returncode == 0, done.stderr
    rows = done.stdout.strip().splitlines()
    assert rows[0] == '"source_uri","cuts"'
    beach = next(r for r in rows if "beach.mp4" in r)
    assert beach.endswith(',"[60, 90]"')  # the demo's beach.mp4 cuts, as JSON


@pytest.mark.parametrize("command", [
    ["expand", "a red fox in snow", "--set", "stages.expand.model={missing}"],
    ["run", "-i", "{videos}", "-o", "{fresh}", "--runner", "sequential", "-c", "{config}",
     "--set", "stages.expand.model={missing}"],
], ids=["expand", "run"])
def test_a_model_that_cannot_load_is_one_line_naming_it_and_its_field(command, demo, tmp_path):
    missing = str(tmp_path / "no-such-model")
    args = [a.format(missing=missing, videos=demo["videos"], fresh=tmp_path / "out", config=demo["config"])
            for a in command]
    done = vidprep(args, tmp_path)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"vidprep {args[0]}: error: stages.expand.model: cannot load model {missing!r}: ")
    assert "Traceback" not in done.stderr


def test_sample_names_the_text_encoder_it_cannot_load(demo, tmp_path):
    """`vidprep sample` loads the encode stage's text encoder (named in the shards' metadata)."""
    trained = vidprep(["train", "--data", str(demo["pristine"]), "-c", str(REPO / "configs" / "train_baby.yaml"),
                       "--steps", "1", "-o", str(tmp_path / "results")], tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    text = demo["models"] / "text"
    text.rename(tmp_path / "text-moved")
    try:
        done = vidprep(["sample", "a fox", "--checkpoint", str(tmp_path / "results"), "--out", "fox.mp4"], tmp_path)
    finally:
        (tmp_path / "text-moved").rename(text)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith(
        f"vidprep sample: error: stages.encode.text_encoder: cannot load model {str(text)!r}: ")
    assert "Traceback" not in done.stderr
