"""Shards written by a run with `encode`: readable by pyarrow and DuckDB, indexed, with stats, exactly once."""
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.catalog.views import connect
from pipeline.store.commit import CommitLog
from pipeline.config import load_config
from pipeline.run.runner import run
from pipeline.kit.tiny import vae
from schemas.shards import LATENT_METADATA_KEY, SHARDS

@pytest.fixture(scope="module")
def overrides(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    models = vae.build(folder / "vae")
    return ["run.runner=sequential", f"stages.encode.vae={models['vae_wan']}",
            "stages.encode.text_encoder=null"]  # no expand stage here: no captions to embed


@pytest.fixture(scope="module")
def config_yaml(demo_yaml):
    return demo_yaml(("probe", "split", "encode"))


@pytest.fixture(scope="module")
def out(corpus_dir, overrides, config_yaml, tmp_path_factory):
    folder = tmp_path_factory.mktemp("out")
    # One source per writer call: a wave's bucket gets several shard, index and stats files (issue 12, item 5).
    run(load_config(config_yaml, overrides + ["run.writer_rows=1"]), corpus_dir, folder, progress=False)
    return folder


def test_shards_read_back_identically_with_pyarrow_and_duckdb(out):
    files = CommitLog(out).files("shards")
    assert files and all("/shards/" in f for f in files)
    from_arrow = {}
    for f in files:
        table = pq.read_table(f)
        assert table.schema.remove_metadata().equals(SHARDS.remove_metadata())
        from_arrow.update(zip(table.column("clip_id").to_pylist(), table.column("latent").to_pylist()))
    from_duckdb = dict(connect(out).execute("SELECT clip_id, latent FROM shards").fetchall())
    assert from_duckdb == from_arrow
    accepted = connect(out).execute("SELECT count(*) FROM clips WHERE status = 'accepted'").fetchone()[0]
    assert len(from_arrow) == accepted


def test_index_points_at_the_right_rows(out):
    index = connect(out).execute("SELECT clip_id, file, row_group, row, latent_shape FROM shard_index").fetchall()
    assert index
    for clip_id, file, row_group, row, shape in index:
        group = pq.ParquetFile(out / file).read_row_group(row_group, columns=["clip_id", "latent_shape"])
        assert group.column("clip_id")[row].as_py() == clip_id
        assert group.column("latent_shape")[row].as_py() == shape


def test_file_layout_metadata_and_stats(out):
    for f in CommitLog(out).files("shards"):
        parquet = pq.ParquetFile(f)
        meta = json.loads(parquet.schema_arrow.metadata[LATENT_METADATA_KEY])
        assert meta["vae_class"] == "AutoencoderKLWan" and meta["latents_std"] == [1.5, 0.8, 1.0, 1.2]
        columns = {parquet.metadata.row_group(0).column(i).path_in_schema: parquet.metadata.row_group(0).column(i)
                   for i in range(parquet.metadata.num_columns)}
        assert columns["latent"].compression == "UNCOMPRESSED"
        assert columns["caption_long"].compression == "ZSTD"
    con = connect(out)
    for bucket, channel, mean, var in con.execute("""SELECT bucket, channel, sum(sum) / sum(count),
            sum(sum_sq) / sum(count) - pow(sum(sum) / sum(count), 2) FROM shard_stats GROUP BY ALL""").fetchall():
        latents = [np.frombuffer(b, np.float16).reshape(s).astype(np.float64)[channel] for b, s in
                   con.execute("SELECT latent, latent_shape FROM shards WHERE bucket = ?", [bucket]).fetchall()]
        values = np.concatenate([l.ravel() for l in latents])
        assert mean == pytest.approx(values.mean(), abs=1e-6) and var == pytest.approx(values.var(), rel=1e-4)


def test_stats_count_every_committed_latent(out):
    """shard_stats per channel: count = sum of T*H*W over all committed latents, mean/std = numpy's over them."""
    con = connect(out)
    latents = [np.frombuffer(b, np.float16).reshape(s).astype(np.float64)
               for b, s in con.execute("SELECT latent, latent_shape FROM shards").fetchall()]
    assert len({l.shape[0] for l in latents}) == 1 and len(latents) > 1
    per_channel = np.concatenate([l.reshape(l.shape[0], -1) for l in latents], axis=1)  # (C, sum of T*H*W)
    waves = con.execute("SELECT count(DISTINCT wave_id), count(DISTINCT file) FROM shard_index").fetchone()
    assert waves[1] > waves[0]  # some wave wrote a bucket in more than one file: the case that lost batches
    stats = con.execute("""SELECT channel, sum(count), sum(sum) / sum(count),
                                  sqrt(sum(sum_sq) / sum(count) - pow(sum(sum) / sum(count), 2))
                           FROM shard_stats GROUP BY channel ORDER BY channel""").fetchall()
    assert [count for _, count, _, _ in stats] == [sum(int(np.prod(l.shape[1:])) for l in latents)] * len(stats)
    assert [mean for _, _, mean, _ in stats] == pytest.approx(per_channel.mean(axis=1), abs=1e-6)
    assert [std for _, _, _, std in stats] == pytest.approx(per_channel.std(axis=1), rel=1e-4)


def test_catalog_records_bucket_and_vae(out):
    rows = connect(out).execute("""SELECT c.bucket, c.latent_shape, c.vae_id, s.latent_shape FROM clips c
                                   JOIN shards s USING (clip_id)""").fetchall()
    assert rows and all(r[0] and r[1] == r[3] and r[2].endswith("wan") for r in rows)


def test_killed_run_with_shards_resumes_exactly_once(corpus_dir, overrides, config_yaml, out, tmp_path):
    args = [sys.executable, "-m", "pipeline.cli", "run", "-c", str(config_yaml), "-i", corpus_dir,
            "-o", str(tmp_path), "--set", "run.wave_size=1", "--set", "run.writer_rows=1"]
    for item in overrides:
        args += ["--set", item]
    env = {k: v for k, v in os.environ.items() if k != "VIDPREP_CRASH_AT"}
    killed = subprocess.run(args, env={**env, "VIDPREP_CRASH_AT": "published:2"}, capture_output=True, timeout=300)
    assert killed.returncode == -9
    assert subprocess.run(args, env=env, capture_output=True, timeout=300).returncode == 0
    query = "SELECT clip_id, latent FROM shards ORDER BY 1"
    assert connect(tmp_path).execute(query).fetchall() == connect(out).execute(query).fetchall()
    on_disk = {str(p) for p in (tmp_path / "shards").rglob("*.parquet")}
    assert on_disk == {f for f in CommitLog(tmp_path).files() if "/shards/" in f}
