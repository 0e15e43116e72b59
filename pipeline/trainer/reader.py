"""Reading planned batches: each needed row group read once, tensors viewed zero-copy, batches assembled.

`np.frombuffer` views each value inside the Arrow buffers read from Parquet
(no copy); the batch arrays are then written once — latents stacked, text
embeddings padded to the batch's longest caption with a mask — in arrays
taken from Arrow's memory pool (reused between batches without page faults)
and handed to torch with `torch.from_numpy` (no copy). numpy does the copies:
torch's intra-op threads spin on a busy machine for what is a memcpy.
"""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.store.location import Location

COLUMNS = ["clip_id", "latent", "latent_dtype", "text_long", "text_long_shape", "text_short", "text_short_shape", "text_dtype"]
LONG, SHORT, DROP = 0, 1, 2  # per-row text choice of the plan
_NUMPY = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32}


_FILES: dict[str, pq.ParquetFile] = {}


def _parquet(path: str, **filesystem) -> pq.ParquetFile:
    """An open shard file: local (memory-mapped: pages straight from the page cache), or on a store
    (`filesystem=`, pipeline/store/location.py: ranged reads of the row groups asked for)."""
    if path not in _FILES:
        if len(_FILES) >= 64:
            _FILES.pop(next(iter(_FILES))).close()
        _FILES[path] = pq.ParquetFile(path, memory_map=not filesystem, **filesystem)
    return _FILES[path]


def read_batches(loader, batches: list[tuple[np.ndarray, np.ndarray]], epoch: int, start: int) -> list[dict]:
    """Read the row groups these batches need (each once) and assemble the batches.

    Values are viewed in place (np.frombuffer over the Arrow buffers, no copy) and written once into the
    batch arrays, with numpy: torch's intra-op threads would spin on a busy machine for a memcpy."""
    index = loader.index
    needed = sorted({int(b) for rows, _ in batches for b in np.unique(loader.row_block[rows])})
    groups = {}
    for b in needed:
        loc = Location.of(index.out)
        path = loc.full(index.files[loader.block_file[b]])
        groups[b] = _RowGroup(_parquet(path, **loc.filesystem).read_row_group(int(loader.block_rg[b]),
                                                                              columns=COLUMNS), path)
    info = torch.utils.data.get_worker_info()
    out = []
    packed = loader.config.packing and epoch >= 0  # held-out batches (epoch -1) stay bucketed
    for i, (rows, choice) in enumerate(batches):
        keys = [index.keys[k] for k in index.key[rows].tolist()]
        latents, texts, ids = [], [], []
        for r, c, (_, shape) in zip(rows.tolist(), choice.tolist(), keys):
            group, j = groups[int(loader.row_block[r])], int(index.row[r])
            latents.append(group.latent(j, shape))
            texts.append(group.text(j, c))
            ids.append(group.clip_ids[j])
        text, mask = _pad_text(texts, text_dim(index))
        batch = {"text": _to_torch(text), "text_mask": torch.from_numpy(mask), "clip_id": ids, "epoch": epoch,
                 "position": start + i, "worker": info.id if info else -1}
        if packed:  # NaViT: one flat buffer of every latent's values, in order, and each latent's shape
            batch.update(latent=_to_torch(_concat(latents)), shapes=[shape for _, shape in keys],
                         bucket=[bucket for bucket, _ in keys])
        else:
            batch.update(latent=_to_torch(_stack(latents)), bucket=keys[0][0])
        out.append(batch)
    return out


class _RowGroup:
    """Zero-copy numpy views of one row group's tensor values (np.frombuffer over the Arrow buffers)."""

    def __init__(self, table: pa.Table, path: str):
        self.path = path
        self.clip_ids = table.column("clip_id").to_pylist()
        self.columns = {name: _Binary(table.column(name)) for name in ("latent", "text_long", "text_short")}
        self.shapes = {name: table.column(f"{name}_shape").to_pylist() for name in ("text_long", "text_short")}
        self.latent_dtype = table.column("latent_dtype").to_pylist()
        self.text_dtype = table.column("text_dtype").to_pylist()

    def latent(self, j: int, shape) -> tuple[np.ndarray, str]:
        array = self.columns["latent"].get(j, self.latent_dtype[j])
        if array is None or array.size != math.prod(shape):
            raise ValueError(f"{self.path}: row {j} latent has {None if array is None else array.size} values, "
                             f"its shape {shape} needs {math.prod(shape)}")
        return array.reshape(shape), self.latent_dtype[j]

    def text(self, j: int, choice: int) -> tuple[np.ndarray, str] | None:
        order = {LONG: ("text_long", "text_short"), SHORT: ("text_short", "text_long"), DROP: ()}[choice]
        for name in order:  # the chosen caption, else the other one, else no text
            shape = self.shapes[name][j]
            array = self.columns[name].get(j, self.text_dtype[j]) if shape else None
            if array is not None and array.size:
                return array.reshape(shape), self.text_dtype[j]
        return None


class _Binary:
    def __init__(self, column: pa.ChunkedArray):
        self.chunks, starts = [], [0]
        for chunk in column.chunks:
            buffers = chunk.buffers()
            offsets = np.frombuffer(buffers[1], np.int32)[chunk.offset:chunk.offset + len(chunk) + 1] if buffers[1] else None
            self.chunks.append((chunk, offsets, buffers[2]))
            starts.append(starts[-1] + len(chunk))
        self.starts = np.array(starts)

    def get(self, j: int, dtype: str | None) -> np.ndarray | None:
        c = int(np.searchsorted(self.starts, j, side="right") - 1)
        chunk, offsets, data = self.chunks[c]
        j -= int(self.starts[c])
        if offsets is None or (chunk.null_count and not chunk[j].is_valid) or dtype is None:
            return None
        np_dtype = np.dtype(_NUMPY[dtype])
        return np.frombuffer(data, np_dtype, count=int(offsets[j + 1] - offsets[j]) // np_dtype.itemsize, offset=int(offsets[j]))


def _empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised array from Arrow's memory pool: freed batches are reused without page faults
    (a fresh malloc'd array of tens of MiB costs a fault per 4 KiB page on every batch)."""
    dtype = np.dtype(dtype)
    return np.frombuffer(pa.allocate_buffer(max(1, math.prod(shape)) * dtype.itemsize), dtype)[:math.prod(shape)].reshape(shape)


def _stack(arrays: list[tuple[np.ndarray, str]]) -> tuple[np.ndarray, str]:
    dtypes = {d for _, d in arrays}
    if len(dtypes) > 1:  # rows stored in different dtypes (waves encoded differently): widen to float32
        arrays, dtypes = [(_float32(a, d), "float32") for a, d in arrays], {"float32"}
    out = _empty((len(arrays), *arrays[0][0].shape), arrays[0][0].dtype)
    for i, (array, _) in enumerate(arrays):
        out[i] = array
    return out, dtypes.pop()


def _concat(arrays: list[tuple[np.ndarray, str]]) -> tuple[np.ndarray, str]:
    """Latents of any shapes → one flat array of their values, in order (a packed batch's buffer)."""
    dtypes = {d for _, d in arrays}
    if len(dtypes) > 1:
        arrays, dtypes = [(_float32(a, d), "float32") for a, d in arrays], {"float32"}
    sizes = [a.size for a, _ in arrays]
    out = _empty((sum(sizes),), arrays[0][0].dtype)
    for (array, _), begin, size in zip(arrays, np.cumsum([0] + sizes).tolist(), sizes):
        out[begin:begin + size] = array.reshape(-1)
    return out, dtypes.pop()


def _float32(array: np.ndarray, dtype: str) -> np.ndarray:
    return (array.astype(np.uint32) << 16).view(np.float32) if dtype == "bfloat16" else array.astype(np.float32)


def _to_torch(item: tuple[np.ndarray, str]) -> torch.Tensor:
    array, dtype = item
    tensor = torch.from_numpy(array)
    return tensor.view(torch.bfloat16) if dtype == "bfloat16" else tensor


def _pad_text(texts: list[tuple[np.ndarray, str] | None], dim: int) -> tuple[tuple[np.ndarray, str], np.ndarray]:
    """Unpadded (L_i, E) embeddings → (B, S, E) zero-padded and a (B, S) mask; dropped text has no tokens."""
    present = [t for t in texts if t is not None]
    dtypes = {d for _, d in present}
    if len(dtypes) > 1:
        texts = [None if t is None else (_float32(*t), "float32") for t in texts]
        dtypes = {"float32"}
    dtype = dtypes.pop() if dtypes else "float32"
    lengths = np.array([0 if t is None else t[0].shape[0] for t in texts], np.int64)
    length = int(lengths.max()) if len(texts) else 0
    dim = present[0][0].shape[1] if present else dim
    text = _empty((len(texts), length, dim), _NUMPY[dtype])  # each byte written once: copy, then zero the tail
    for i, t in enumerate(texts):
        n = int(lengths[i])
        if n:
            text[i, :n] = t[0]
        text[i, n:] = 0
    return (text, dtype), np.arange(length)[None] < lengths[:, None]


def text_dim(index) -> int:
    """E, the text-embedding size, from the first shard file that has a text embedding (0: no text)."""
    if index.text_dim < 0:
        dim = 0
        if index.meta.get("text_encoder", True):  # the encode stage writes null when it embeds no text
            for name in index.files:
                loc = Location.of(index.out)
                table = pq.read_table(loc.full(name), columns=["text_long_shape", "text_short_shape"],
                                      **loc.filesystem)
                shapes = [s for column in table.columns for s in column.to_pylist() if s]
                if shapes:
                    dim = int(shapes[0][1])
                    break
        index.text_dim = dim
    return index.text_dim
