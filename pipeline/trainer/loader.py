"""The bucketed, deterministic, resumable loader over committed shards.

An epoch's plan is a pure function of (index, seed, epoch, world size) and is
computed from the shard index alone, identically on every rank:
  1. blocks = row groups (a file's row group), in an order permuted by (seed, epoch);
  2. windows = `window_row_groups` consecutive blocks: each is read once, by one
     reader, never one row group per sample; its rows are shuffled, grouped by
     (bucket, latent shape) and cut into batches of that shape's size, set by a
     token budget (tokens per sample = patch grid size); partial batches are kept;
     with `packing` (NaViT), rows of any bucket are instead packed first-fit-
     decreasing into sequences of at most `token_budget` tokens (see `pack`);
  3. per batch row, the text choice: dropped (p = text_drop_prob, for CFG), else
     caption_long (p = caption_long_prob) or caption_short;
  4. windows go to ranks greedily (fewest batches so far) and every rank is cut to
     the smallest rank's batch count, so DDP ranks take equal steps; the few cut
     rows wait for the next epoch's permutation.
Within a rank, DataLoader workers each read whole windows (a window id is the
map-style dataset's key), and the DataLoader returns them in sampler order, so
the batch sequence does not depend on the worker count. The state is (seed,
epoch, batches consumed): resuming plans the epoch again and starts at the
window holding the next batch, without reading what came before. Reading and
zero-copy decoding are in pipeline/trainer/reader.py.
"""
from __future__ import annotations

import hashlib
import math
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

import numpy as np
import pyarrow.compute as pc
import torch

from pipeline.store.commit import CommitLog
from pipeline.trainer.index import ShardIndex
from pipeline.trainer.reader import DROP, LONG, SHORT, read_batches, text_dim


@dataclass
class DataConfig:
    path: str = ""  # the pipeline output (OUT or OUT/shards); `vidprep train --data` sets it
    token_budget: int = 8192  # patch tokens per batch: batch size = budget // tokens per sample
    max_batch_size: int = 64  # clips per batch (per pack with `packing`)
    window_row_groups: int = 4  # row groups read and shuffled together (memory ≈ this × row group size)
    caption_long_prob: float = 0.95  # else caption_short (DALL-E 3 mixed 95% descriptive captions)
    text_drop_prob: float = 0.1  # empty caption, for classifier-free guidance
    num_workers: int = 2  # reader processes per rank (0: read in the training process)
    prefetch: int = 2  # windows in flight per worker
    holdout_fraction: float = 0.0  # clips (by clip_id hash) kept out of training for the held-out loss
    holdout_max_rows: int = 64
    latent_norm: Literal["auto", "stats", "none"] = "auto"  # auto: shard_stats' per-channel mean/std if present
    buckets: list[str] = field(default_factory=list)  # train on these buckets only (empty: all)
    accepted_only: bool = True  # skip shard rows whose clip the catalog no longer accepts (refilter, dedup)
    allow_index_change: bool = False  # resume a checkpoint made on other shards
    unconditional: bool = False  # train without text on shards that carry none (else such shards are refused)
    packing: bool = False  # NaViT: pack clips of any bucket into one sequence of <= token_budget tokens per batch

    def __post_init__(self):
        for name in ("token_budget", "max_batch_size", "window_row_groups", "prefetch", "holdout_max_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1 (got {getattr(self, name)})")
        for name in ("caption_long_prob", "text_drop_prob", "holdout_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: must be in [0, 1] (got {getattr(self, name)})")
        if self.holdout_fraction >= 1.0:
            raise ValueError(f"holdout_fraction: must be < 1 (got {self.holdout_fraction})")
        if self.num_workers < 0:
            raise ValueError(f"num_workers: must be >= 0 (got {self.num_workers})")


@dataclass
class EpochPlan:
    """One rank's epoch: its windows (block ids) and each window's batches (index rows, text choices)."""

    windows: list[np.ndarray]
    batches: list[list[tuple[np.ndarray, np.ndarray]]]
    starts: np.ndarray  # batch position where each window starts
    steps: int  # batches this epoch (the same on every rank)
    dropped: np.ndarray  # rows no rank sees this epoch (cut for equal steps)


class Loader:
    """Iterates batches forever (epoch after epoch), tracking (seed, epoch, batches consumed)."""

    def __init__(self, index: ShardIndex, config: DataConfig, patch: tuple[int, int], seed: int = 0,
                 rank: int = 0, world_size: int = 1, pin_memory: bool = False):
        self.index, self.config, self.patch = index, config, patch
        self.seed, self.rank, self.world_size, self.pin_memory = seed, rank, world_size, pin_memory
        self.epoch = self.batches = 0
        self._plans: dict[int, list[EpochPlan]] = {}
        self.batch_size = np.array([batch_size(shape, patch, config) for _, shape in index.keys])
        self.key_tokens = np.array([tokens_of(shape, patch) for _, shape in index.keys], np.int64)
        # Blocks: the index is sorted by (file, row group, row), so each block's rows are contiguous.
        block_key = index.file_id.astype(np.int64) << 32 | index.row_group
        first = np.flatnonzero(np.r_[True, block_key[1:] != block_key[:-1]])
        self.row_block = np.cumsum(np.r_[False, block_key[1:] != block_key[:-1]]).astype(np.int64)  # (R,)
        self.block_file, self.block_rg = index.file_id[first], index.row_group[first]
        wanted = np.ones(len(index), bool)
        if config.buckets:
            unknown = set(config.buckets) - {b for b, _ in index.keys}
            if unknown:
                raise ValueError(f"buckets: {sorted(unknown)[0]!r} is not in the shards (have {sorted({b for b, _ in index.keys})})")
            wanted &= np.isin(index.key, [i for i, (b, _) in enumerate(index.keys) if b in config.buckets])
        if config.accepted_only:
            wanted &= accepted_mask(index)
        self.holdout = wanted & holdout_mask(index, config.holdout_fraction)
        self.train_rows = np.flatnonzero(wanted & ~self.holdout)
        if len(self.train_rows) == 0:
            raise ValueError(f"{index.out}: no training rows left (buckets {config.buckets}, holdout {config.holdout_fraction})")
        blocks = np.unique(self.row_block[self.train_rows])
        if len(blocks) < world_size:
            raise ValueError(f"{len(blocks)} row groups cannot feed {world_size} ranks: write smaller row groups or use fewer ranks")
        self.window_size = max(1, min(config.window_row_groups, len(blocks) // world_size))
        text_dim(index)  # read once here, not in every worker
        digest = hashlib.blake2b(index.hash.encode(), digest_size=16)
        digest.update(self.train_rows.tobytes())
        self.data_hash = digest.hexdigest()  # the index and the rows chosen from it

    # ---- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch, "batches": self.batches,
                "world_size": self.world_size, "index_hash": self.index.hash, "data_hash": self.data_hash}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["data_hash"] != self.data_hash and not self.config.allow_index_change:
            raise ValueError("data.allow_index_change: the checkpoint was trained on other data (shard index "
                             f"{state['index_hash']}, now {self.index.hash}; or other buckets, holdout or catalog "
                             "statuses); set it to resume anyway")
        self.seed, self.epoch, self.batches = state["seed"], state["epoch"], state["batches"]
        if state["world_size"] != self.world_size:  # another plan: this epoch restarts from its beginning
            warnings.warn(f"world size {state['world_size']} → {self.world_size}: epoch {self.epoch} restarts")
            self.batches = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.plan(self.epoch).steps

    # ---- planning ----------------------------------------------------------------------------------
    def plan(self, epoch: int) -> EpochPlan:
        return _plan(self, epoch)[self.rank]

    def plans(self, epoch: int) -> list[EpochPlan]:
        """Every rank's plan (each rank computes all of them; cheap, from the index alone)."""
        return _plan(self, epoch)

    # ---- iteration ---------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            steps = self.plan(self.epoch).steps
            for batch in self._epoch(self.epoch, self.batches):
                self.batches += 1  # counted when handed out: a checkpoint after the step resumes after it
                if self.batches >= steps:
                    self.epoch, self.batches = self.epoch + 1, 0
                yield batch
            if self.batches >= steps:  # resumed at the very end of an epoch
                self.epoch, self.batches = self.epoch + 1, 0

    def _epoch(self, epoch: int, start: int) -> Iterator[dict[str, Any]]:
        plan = self.plan(epoch)
        if start >= plan.steps:
            return
        first = int(np.searchsorted(plan.starts, start, side="right") - 1)
        items = [(first, start - int(plan.starts[first]))] + [(w, 0) for w in range(first + 1, len(plan.windows))]
        windows = _Windows(self, plan, epoch)
        if self.config.num_workers == 0:
            for item in items:
                yield from windows[item]
            return
        loader = torch.utils.data.DataLoader(windows, batch_size=None, sampler=items, collate_fn=_identity,
                                             num_workers=self.config.num_workers, prefetch_factor=self.config.prefetch,
                                             pin_memory=self.pin_memory)
        for batches in loader:
            yield from batches

    def heldout(self) -> list[dict[str, Any]]:
        """Fixed held-out batches (long captions, no drop): the first `holdout_max_rows` held-out rows."""
        rows = np.flatnonzero(self.holdout)[: self.config.holdout_max_rows]
        batches = []
        for k in np.unique(self.index.key[rows]):
            r = rows[self.index.key[rows] == k]
            batches += [(c, np.full(len(c), LONG, np.int8)) for c in np.array_split(r, math.ceil(len(r) / self.batch_size[k]))]
        return read_batches(self, batches, epoch=-1, start=0)


def tokens_of(shape: tuple[int, ...], patch: tuple[int, int]) -> int:
    """Patch tokens of one latent (C, T, H, W) with patch (p_t, p), after padding to whole patches."""
    _, t, h, w = shape
    return math.ceil(t / patch[0]) * math.ceil(h / patch[1]) * math.ceil(w / patch[1])


def batch_size(shape: tuple[int, ...], patch: tuple[int, int], config: DataConfig) -> int:
    return int(min(max(config.token_budget // tokens_of(shape, patch), 1), config.max_batch_size))


def pack(rows: np.ndarray, tokens: np.ndarray, keys: np.ndarray, budget: int, max_rows: int) -> list[np.ndarray]:
    """First-fit decreasing: rows (in their shuffled order) → packs of at most `budget` tokens and `max_rows` rows.

    Rows are taken longest first (a stable sort, so equal lengths keep the shuffled order) and each goes
    into the first pack with room, else a new one; a row longer than the budget gets a pack of its own.
    Within a pack, rows of one latent shape are made consecutive (by key): the model runs each such run
    as one dense batch. Deterministic: a pure function of the inputs."""
    order = np.argsort(-tokens, kind="stable")
    packs: list[list[int]] = []
    free: list[int] = []  # tokens left per pack
    for i in order.tolist():
        n = int(tokens[i])
        for j, room in enumerate(free):  # first fit; packs are few per window (rows ÷ rows per pack)
            if n <= room and len(packs[j]) < max_rows:
                packs[j].append(i)
                free[j] -= n
                break
        else:
            packs.append([i])
            free.append(budget - n)
    out = []
    for members in packs:
        members = np.array(members, np.int64)
        members = members[np.argsort(keys[members], kind="stable")]
        out.append(rows[members])
    return out


def accepted_mask(index: ShardIndex) -> np.ndarray:
    """False for rows whose clip the catalog's `clips` view (with the newest status overlay) does not accept."""
    if not CommitLog(index.out).files("clips"):  # shards without a catalog (synthetic): all rows
        return np.ones(len(index), bool)
    from pipeline.catalog.views import arrow, connect

    excluded = arrow(connect(index.out).sql("SELECT clip_id FROM clips WHERE status IS DISTINCT FROM 'accepted'"))
    return ~pc.is_in(index.clip_id, value_set=excluded.column(0).combine_chunks()).to_numpy(zero_copy_only=False)


def holdout_mask(index: ShardIndex, fraction: float) -> np.ndarray:
    if fraction <= 0:
        return np.zeros(len(index), bool)
    crc = np.fromiter((zlib.crc32(c.encode()) for c in index.clip_id.to_pylist()), np.uint32, len(index))
    return crc < fraction * 2 ** 32


def _plan(loader: Loader, epoch: int) -> list[EpochPlan]:
    if epoch not in loader._plans:  # one epoch's plans kept
        loader._plans = {epoch: plan_epoch(loader, epoch)}
    return loader._plans[epoch]


def plan_epoch(loader: Loader, epoch: int) -> list[EpochPlan]:
    cfg, index, seed = loader.config, loader.index, loader.seed
    rows = loader.train_rows
    blocks, block_start = np.unique(loader.row_block[rows], return_index=True)
    block_end = np.r_[block_start[1:], len(rows)]
    order = np.random.default_rng([seed, epoch]).permutation(len(blocks))
    windows = [order[i:i + loader.window_size] for i in range(0, len(order), loader.window_size)]
    window_batches = []
    for w, members in enumerate(windows):
        rng = np.random.default_rng([seed, epoch, w])
        pool = np.concatenate([rows[block_start[b]:block_end[b]] for b in members])
        pool = pool[rng.permutation(len(pool))]
        keys = index.key[pool]
        if cfg.packing:
            batches = pack(pool, loader.key_tokens[keys], keys, cfg.token_budget, cfg.max_batch_size)
        else:
            batches = []
            for k in np.unique(keys):
                of_key = pool[keys == k]
                size = loader.batch_size[k]
                batches += [of_key[i:i + size] for i in range(0, len(of_key), size)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
        window_batches.append([(b, _choices(rng, len(b), cfg)) for b in batches])
    # Windows to ranks: fewest batches so far (ties: lowest rank), then cut to equal step counts.
    owned: list[list[int]] = [[] for _ in range(loader.world_size)]
    counts = np.zeros(loader.world_size, np.int64)
    for w, batches in enumerate(window_batches):
        r = int(np.argmin(counts))
        owned[r].append(w)
        counts[r] += len(batches)
    steps = int(counts.min())
    plans = []
    for r in range(loader.world_size):
        kept_windows, kept, dropped, total = [], [], [], 0
        for w in owned[r]:
            take = window_batches[w][: max(steps - total, 0)]
            dropped += [b for b, _ in window_batches[w][len(take):]]
            if take:
                kept_windows.append(blocks[windows[w]])
                kept.append(take)
                total += len(take)
        starts = np.cumsum([0] + [len(b) for b in kept])[:-1]
        plans.append(EpochPlan(kept_windows, kept, starts, steps,
                               np.concatenate(dropped) if dropped else np.zeros(0, np.int64)))
    return plans


def _choices(rng: np.random.Generator, n: int, cfg: DataConfig) -> np.ndarray:
    drop = rng.random(n) < cfg.text_drop_prob
    long = rng.random(n) < cfg.caption_long_prob
    return np.where(drop, DROP, np.where(long, LONG, SHORT)).astype(np.int8)


class _Windows(torch.utils.data.Dataset):
    """Map-style: key (window, first batch) → that window's batches from `first` on, read once."""

    def __init__(self, loader: Loader, plan: EpochPlan, epoch: int):
        self.loader, self.plan, self.epoch = loader, plan, epoch

    def __len__(self):
        return len(self.plan.windows)

    def __getitem__(self, item):
        w, first = item
        return read_batches(self.loader, self.plan.batches[w][first:], self.epoch, int(self.plan.starts[w]) + first)


def _identity(x):
    return x
