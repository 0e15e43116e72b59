"""The loader: zero-copy decode, buckets and token budget, coverage, rank/worker disjointness, O(1) resume."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import pipeline.trainer.reader as reader_mod
from pipeline.store.commit import CommitLog
from pipeline.trainer.index import ShardIndex
from pipeline.trainer.loader import DROP, LONG, DataConfig, Loader, _choices
from pipeline.trainer.synthetic import write_shards

PATCH = (1, 2)  # (p_t, p): tokens per sample 8 for (4, 2, 4, 4) and 6 for (4, 1, 4, 6)


def make(shards, rank=0, world_size=1, seed=0, **config) -> Loader:
    config = {"token_budget": 48, "num_workers": 0, "window_row_groups": 2, **config}
    return Loader(ShardIndex.open(shards), DataConfig(**config), PATCH, seed=seed, rank=rank, world_size=world_size)


def epoch(loader: Loader) -> list[dict]:
    return list(itertools.islice(iter(loader), loader.steps_per_epoch))


def stored(out) -> dict[str, dict]:
    rows = {}
    for path in CommitLog(out).files("shards"):
        for row in pq.read_table(path).to_pylist():
            rows[row["clip_id"]] = row
    return rows


@pytest.fixture
def reads(monkeypatch):
    """Counts row-group reads."""
    counter = {"row_groups": 0}
    real = reader_mod._parquet

    class Counting:
        def __init__(self, handle):
            self.handle = handle

        def read_row_group(self, *args, **kwargs):
            counter["row_groups"] += 1
            return self.handle.read_row_group(*args, **kwargs)

    monkeypatch.setattr(reader_mod, "_parquet", lambda path, **filesystem: Counting(real(path, **filesystem)))
    return counter


def test_decoded_tensors_are_the_stored_bytes_and_captions_follow_the_plan(shards):
    loader = make(shards)
    rows, plan = stored(shards), loader.plan(0)
    choices = [c for window in plan.batches for _, c in window]
    for batch, choice in zip(epoch(loader), choices):
        assert batch["latent"].dtype == torch.float16 and batch["text"].dtype == torch.float16
        for i, clip in enumerate(batch["clip_id"]):
            row = rows[clip]
            expected = np.frombuffer(row["latent"], np.float16).reshape(row["latent_shape"])
            assert np.array_equal(batch["latent"][i].numpy(), expected)
            assert row["bucket"] == batch["bucket"]
            length = int(batch["text_mask"][i].sum())
            if choice[i] == DROP:
                assert length == 0
            else:
                name = "text_long" if choice[i] == LONG else "text_short"
                text = np.frombuffer(row[name], np.float16).reshape(row[f"{name}_shape"])
                assert np.array_equal(batch["text"][i, :length].numpy(), text)
                assert not batch["text_mask"][i, length:].any() and not batch["text"][i, length:].any()


def test_bfloat16_latents_decode_zero_copy(tmp_path):
    write_shards(tmp_path, {"1x16x16": (4, 1, 2, 2)}, 6, latent_dtype="bfloat16", row_group_rows=3)
    batch = next(iter(make(str(tmp_path), token_budget=100)))
    row = stored(tmp_path)[batch["clip_id"][0]]
    bits = np.frombuffer(row["latent"], np.uint16).astype(np.uint32) << 16
    assert batch["latent"].dtype == torch.bfloat16
    assert np.array_equal(batch["latent"][0].float().numpy().ravel(), bits.view(np.float32))


def test_one_bucket_per_batch_and_batch_size_from_the_token_budget(shards):
    loader = make(shards)
    sizes = {"8x32x32": 48 // 8, "1x32x48": 48 // 6}
    batches = epoch(loader)
    for batch in batches:
        assert batch["latent"].shape[0] <= sizes[batch["bucket"]]
        assert len({tuple(batch["latent"].shape[1:])}) == 1
    full = sum(b["latent"].shape[0] == sizes[b["bucket"]] for b in batches)
    assert full >= len(batches) - len(loader.plan(0).windows) * 2  # at most one partial batch per bucket per window
    assert make(shards, max_batch_size=4).batch_size.tolist() == [4, 4]


def test_one_epoch_sees_every_row_exactly_once_and_epochs_reshuffle(shards):
    loader = make(shards)
    first = [c for b in epoch(loader) for c in b["clip_id"]]
    second = [c for b in epoch(loader) for c in b["clip_id"]]
    assert sorted(first) == sorted(stored(shards)) and len(first) == 48
    assert sorted(second) == sorted(first) and second != first
    assert loader.state_dict()["epoch"] == 2


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_take_equal_steps_on_disjoint_rows_that_cover_the_data(shards, world_size):
    seen, dropped, steps = [], set(), set()
    for rank in range(world_size):
        loader = make(shards, rank=rank, world_size=world_size, seed=5)
        steps.add(loader.steps_per_epoch)
        seen.append([c for b in epoch(loader) for c in b["clip_id"]])
        dropped |= {loader.index.clip_id[int(r)].as_py() for r in loader.plan(0).dropped}
    assert len(steps) == 1  # DDP ranks step together
    flat = [c for rank in seen for c in rank]
    assert len(flat) == len(set(flat))  # disjoint
    assert set(flat) | dropped == set(stored(shards)) and not set(flat) & dropped  # coverage
    assert len(dropped) <= 0.25 * len(flat)


def test_batch_sequence_does_not_depend_on_the_worker_count(shards):
    def run(workers):
        loader = make(shards, num_workers=workers, window_row_groups=2)
        return [(b["clip_id"], b["latent"], b["text"], b["text_mask"], b["worker"]) for b in epoch(loader)]
    alone, two = run(0), run(2)
    assert [b[0] for b in alone] == [b[0] for b in two]
    for a, b in zip(alone, two):
        assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])
    assert {b[4] for b in alone} == {-1} and {b[4] for b in two} == {0, 1}
    by_worker = {w: {c for b in two if b[4] == w for c in b[0]} for w in (0, 1)}
    assert not by_worker[0] & by_worker[1]  # each window (and its rows) read by one worker


def test_row_groups_are_read_once_per_window_not_per_sample(shards, reads):
    loader = make(shards, window_row_groups=3)
    batches = epoch(loader)
    assert reads["row_groups"] == 12  # 48 rows in 12 row groups of 4
    assert sum(len(b["clip_id"]) for b in batches) == 48


def test_resume_continues_the_sequence_without_reading_what_came_before(shards, reads):
    loader = make(shards, seed=7)
    stream = iter(loader)
    consumed = [next(stream) for _ in range(4 + loader.steps_per_epoch)]  # into the second epoch
    state = loader.state_dict()
    assert state == {"seed": 7, "epoch": 1, "batches": 4, "world_size": 1, "index_hash": loader.index.hash,
                     "data_hash": loader.data_hash}
    expected = [next(stream)["clip_id"] for _ in range(5)]

    resumed = make(shards, seed=0)
    resumed.load_state_dict(state)
    reads["row_groups"] = 0
    resumed_stream = iter(resumed)
    first = next(resumed_stream)
    assert reads["row_groups"] <= resumed.window_size  # only the window holding the next batch
    assert [first["clip_id"]] + [next(resumed_stream)["clip_id"] for _ in range(4)] == expected
    assert first["position"] == 4 and first["epoch"] == 1 and consumed


def test_caption_mix_and_text_drop_rates():
    choices = _choices(np.random.default_rng(0), 200_000, DataConfig(caption_long_prob=0.95, text_drop_prob=0.1))
    dropped = (choices == DROP).mean()
    long = (choices == LONG).sum() / (choices != DROP).sum()
    assert abs(dropped - 0.1) < 0.005 and abs(long - 0.95) < 0.005


def test_holdout_rows_never_train_and_form_fixed_batches(shards):
    loader = make(shards, holdout_fraction=0.25)
    held = {c for b in loader.heldout() for c in b["clip_id"]}
    trained = {c for b in epoch(loader) for c in b["clip_id"]}
    assert 3 <= len(held) <= 24 and not held & trained and len(held | trained) == 48
    assert all(b["text_mask"].any(1).all() for b in loader.heldout())  # long captions, never dropped


def test_resume_on_other_shards_is_refused_by_default(shards, tmp_path):
    write_shards(tmp_path, {"1x16x16": (4, 1, 2, 2)}, 6, row_group_rows=3)
    other = make(str(tmp_path))
    with pytest.raises(ValueError, match="data.allow_index_change"):
        other.load_state_dict(make(shards).state_dict())
    assert ShardIndex.open(Path(shards) / "shards").hash == make(shards).index.hash  # OUT/shards works too


def test_clips_the_catalog_no_longer_accepts_are_not_trained_on(tmp_path):
    """A refilter or near-duplicate pass changes statuses after the shards were written."""
    import pyarrow as pa

    from pipeline.store.commit import STAGING, _file_hash
    from schemas.catalog import CLIPS, conform

    write_shards(tmp_path, {"1x16x16": (4, 1, 2, 2)}, 12, row_group_rows=4)
    ids = sorted(stored(tmp_path))
    status = ["rejected" if i % 3 == 0 else "accepted" for i in range(len(ids))]
    n = len(ids)
    clips = conform(pa.table({
        "clip_id": ids, "video_id": ids, "source_uri": ids, "clip_index": pa.array([0] * n, pa.int32()),
        "scene_index": pa.array([0] * n, pa.int32()), "start_frame": [0] * n, "end_frame": [8] * n,
        "num_frames": [8] * n, "start_s": [0.0] * n, "end_s": [1.0] * n, "duration_s": [1.0] * n, "fps": [8.0] * n,
        "width": pa.array([16] * n, pa.int32()), "height": pa.array([16] * n, pa.int32()), "status": status,
        "wave_id": ["w000001"] * n}), CLIPS)
    staged = tmp_path / STAGING / "w000001" / "catalog/clips/part-0.parquet"
    staged.parent.mkdir(parents=True)
    pq.write_table(clips, staged)
    CommitLog(tmp_path).commit("w000001", "test", ["x"], [{"path": "catalog/clips/part-0.parquet", "table": "clips",
                               "rows": n, "bytes": staged.stat().st_size, "blake2b": _file_hash(staged)}], "test")
    accepted = {c for c, s in zip(ids, status) if s == "accepted"}
    seen = {c for b in epoch(make(str(tmp_path), token_budget=100)) for c in b["clip_id"]}
    assert seen == accepted and len(accepted) == 8
    everything = {c for b in epoch(make(str(tmp_path), token_budget=100, accepted_only=False)) for c in b["clip_id"]}
    assert everything == set(ids)
    with pytest.raises(ValueError, match="data.allow_index_change"):  # other rows: a resume would not be exact
        make(str(tmp_path), token_budget=100).load_state_dict(make(str(tmp_path), accepted_only=False).state_dict())
