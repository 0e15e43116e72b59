"""Waves commit while the stream runs, not at its end: a late kill must not lose the early waves."""
from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.kit.synth import write_video
from pipeline.run import runner as runner_mod
from pipeline.run.waves import WaveTracker
from pipeline.store.commit import CommitLog

VIDEOS = 12


@pytest.fixture(scope="module")
def many_small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("many")
    for i in range(VIDEOS):
        write_video(folder / f"v{i:02d}.mp4", [30, 30], width=64, height=36, seed=i)
    return folder


@pytest.mark.parametrize("runner", ["sequential", pytest.param("ray", marks=pytest.mark.ray)])
def test_waves_commit_before_the_stream_ends(many_small, tmp_path, monkeypatch, runner):
    arrived: set[str] = set()  # sources whose rows the driver has received so far
    seen_at_commit: list[int] = []
    add = WaveTracker.add

    def counting_add(self, manifest):
        arrived.update(manifest.column("source_uri").to_pylist())
        return add(self, manifest)

    commit = CommitLog.commit

    def recording_commit(self, *args, **kwargs):
        seen_at_commit.append(len(arrived))
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(WaveTracker, "add", counting_add)
    monkeypatch.setattr(CommitLog, "commit", recording_commit)
    # The default writer_rows (1024) is far more than this run's rows: the old writer held them all to the end.
    config = load_config(None, [f"run.runner={runner}", "run.wave_size=2", "run.num_cpus=2",
                                "stages.split.min_clip_s=0.5", "stages.split.decode_short_side=36"])
    result = runner_mod.run(config, str(many_small), tmp_path / "out", progress=False)
    assert result.waves == VIDEOS // 2 and len(seen_at_commit) == VIDEOS // 2
    assert seen_at_commit[0] < VIDEOS, f"first wave committed only after all {VIDEOS} sources arrived"
    if runner == "sequential":  # in order: each wave commits as soon as its own rows are written
        assert seen_at_commit == list(range(2, VIDEOS + 1, 2))


def test_a_run_that_leaves_many_small_catalog_files_ends_by_compacting_them(many_small, tmp_path):
    from pipeline.catalog.views import connect
    from pipeline.report.summary import run_summary
    from pipeline.store.manifest import Manifest, live_files

    settings = ["run.runner=sequential", "run.wave_size=2", "stages.split.min_clip_s=0.5",
                "stages.split.decode_short_side=36"]
    out = tmp_path / "out"
    few = runner_mod.run(load_config(None, settings + ["run.compact_above_files=6"]), str(many_small), out,
                         progress=False)
    assert few.compaction is None  # 6 waves: 6 files a table, not above 6
    rows = connect(out).sql("SELECT * FROM clips ORDER BY clip_id").fetchall()
    many = runner_mod.run(load_config(None, settings + ["run.compact_above_files=5"]), str(many_small), out,
                          progress=False)  # nothing new to do, and now past the limit
    assert many.compaction.replaced == {"videos": 6, "clips": 6} and many.compaction.written == {"videos": 1, "clips": 1}
    assert "catalog files compacted" in run_summary(many)
    waves, _ = Manifest(out).load()
    assert live_files(waves).num_rows == 2
    assert connect(out).sql("SELECT * FROM clips ORDER BY clip_id").fetchall() == rows
