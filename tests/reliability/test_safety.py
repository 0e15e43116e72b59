"""Nothing a video brings (its name, its metadata) reaches an output path; risky options stay off."""
import re
import shutil

from pipeline.config import load_config
from pipeline.run.runner import run
from stages import STAGES

SAFE_NAME = re.compile(r"^[0-9A-Za-z_.=-]+$")


def test_output_paths_use_only_generated_names(corpus, demo_yaml, tmp_path):
    source = tmp_path / "in"
    (source / "sub dir; rm -rf ~").mkdir(parents=True)
    path, _ = corpus["three_scenes.mp4"]
    shutil.copy(path, source / "sub dir; rm -rf ~" / "..;$(touch pwned) ünï.mp4")
    out = tmp_path / "out"
    run(load_config(demo_yaml(), ["run.runner=sequential"]), str(source), out, progress=False)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files
    for file in files:
        assert file.resolve().is_relative_to(out.resolve())
        assert all(SAFE_NAME.match(part) for part in file.relative_to(out).parts), file
    assert not (tmp_path / "pwned").exists()


def test_remote_code_is_off_by_default():
    for name, cls in STAGES.items():
        if "trust_remote_code" in cls.__dataclass_fields__:
            assert cls().trust_remote_code is False, name
