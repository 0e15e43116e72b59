"""The run configuration: one YAML file plus `--set key=value` overrides.

Everything is validated before any work starts (see pipeline.typed): an
unknown key or a bad value fails with the dotted name of the field.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.typed import ConfigError, build, to_dict
from stages import REQUIRED_STAGES, STAGES
from stages.base import Stage, require

VIDEO_EXTENSIONS = [".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp"]


@dataclass
class RunConfig:
    wave_size: int = 64  # source videos committed together; a crash redoes at most the waves in flight
    videos_per_task: int = 1  # source videos per Ray block: 1 spreads videos over all workers
    writer_rows: int = 1024  # most rows per catalog file write; Ray bundles min(writer_rows, wave_size)
    runner: Literal["ray", "sequential"] = "ray"
    ray_address: str | None = None  # None: embedded Ray; "auto" or "ray://host:10001" for a cluster
    num_cpus: int | None = None  # embedded Ray only; None = all cores
    task_retries: int = 3  # a dead task worker's batch is retried this often (exceptions are not retried)
    actor_restarts: int = 3  # a dead actor is restarted (and its batch retried) this often
    # Every wave adds small catalog files, and every query pays per file: past this many small files
    # in a table, the run ends with `vidprep compact` (one ordinary commit). null: never.
    compact_above_files: int | None = 1000

    def __post_init__(self):
        require(self.wave_size >= 1, "wave_size", f"must be >= 1 (got {self.wave_size})")
        require(self.videos_per_task >= 1, "videos_per_task", f"must be >= 1 (got {self.videos_per_task})")
        require(self.writer_rows >= 1, "writer_rows", f"must be >= 1 (got {self.writer_rows})")
        require(self.num_cpus is None or self.num_cpus >= 1, "num_cpus", f"must be >= 1 (got {self.num_cpus})")
        require(self.task_retries >= 0, "task_retries", f"must be >= 0 (got {self.task_retries})")
        require(self.actor_restarts >= 0, "actor_restarts", f"must be >= 0 (got {self.actor_restarts})")
        require(self.compact_above_files is None or self.compact_above_files >= 2, "compact_above_files",
                f"must be >= 2 or null (got {self.compact_above_files})")


@dataclass
class InputConfig:
    extensions: list[str] = field(default_factory=lambda: list(VIDEO_EXTENSIONS))
    recursive: bool = True
    follow_symlinks: bool = False

    def __post_init__(self):
        require(bool(self.extensions), "extensions", "must name at least one extension")
        self.extensions = [e.lower() if e.startswith(".") else "." + e.lower() for e in self.extensions]


@dataclass
class StorageConfig:
    """Object storage for s3:// inputs and outputs (pipeline/store/location.py). Unset: the environment's
    AWS_ENDPOINT_URL / AWS_REGION; credentials only from the environment (never in a URI or this file)."""
    endpoint: str | None = None  # e.g. http://127.0.0.1:9000 (MinIO, Ceph, moto); None: AWS_ENDPOINT_URL, else AWS
    region: str | None = None  # None: AWS_REGION / AWS_DEFAULT_REGION

    def __post_init__(self):
        if self.endpoint is not None:
            from urllib.parse import urlparse

            parts = urlparse(self.endpoint)
            require(parts.scheme in ("http", "https") and bool(parts.netloc), "endpoint",
                    f"must be a URL like http://host:port (got {self.endpoint!r})")
        require(self.region is None or bool(self.region.strip()), "region", "must not be empty")


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    input: InputConfig = field(default_factory=InputConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    stages: dict[str, Stage] = field(default_factory=dict)

    def plan(self) -> list[Stage]:
        """The enabled stages in plan order."""
        return [self.stages[name] for name in STAGES if name in self.stages]

    def as_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def fingerprint(self) -> str:
        """Hash of what decides the catalog's content (not how it is scheduled)."""
        data = self.as_dict()
        data.pop("run")
        data.pop("storage", None)  # where the data lives, not what it is
        for stage in data["stages"].values():
            for key in NOT_CONTENT:
                stage.pop(key, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# Stage settings that change how a run is scheduled or guarded, never what it writes: outside the fingerprint.
# (near_duplicate_streaming: the end-of-run pass gives the same statuses with it on or off.)
NOT_CONTENT = ("resources", "decode_stall_s", "near_duplicate_streaming")


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read YAML (safe loader), apply `key=value` overrides, validate everything."""
    return from_dict(read_yaml(path, overrides))


def read_yaml(path: str | Path | None, overrides: list[str] = ()) -> dict[str, Any]:
    """A config file's mapping (safe loader; {} without a file) with `key=value` overrides applied."""
    data: dict[str, Any] = {}
    if path is not None:
        text = _read_text(Path(path))
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    for item in overrides:
        apply_override(data, item)
    return data


def _read_text(path: Path) -> str:
    """A config file's text; a folder, a binary file or a missing file is an error naming the path."""
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; -c/--config takes a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8); a config is a YAML file") from None
    except OSError as err:
        raise ConfigError(f"{path}: can't read the config file: {err.strerror or err}") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a text file (has NUL bytes); a config is a YAML file")
    return text


def apply_override(data: dict[str, Any], item: str) -> None:
    """`stages.split.max_clip_s=8` sets data["stages"]["split"]["max_clip_s"] = 8 (value parsed as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key=value")
    try:  # safe loader: a !!python tag is an error, never an object
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ConfigError(f"--set {key.strip()}: not a valid YAML value ({problem})") from None
    node = data
    parts = key.strip().split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is not a mapping")
        node = child
    node[parts[-1]] = value


def from_dict(data: dict[str, Any]) -> Config:
    unknown = set(data) - {"run", "input", "stages", "storage"}
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown key (known keys: input, run, stages, storage)")
    stages_data = data.get("stages") or {}
    if not isinstance(stages_data, dict):
        raise ConfigError("stages: expected a mapping of stage name to its settings")
    stages: dict[str, Stage] = {}
    for name, settings in stages_data.items():
        if name not in STAGES:
            raise ConfigError(f"stages.{name}: unknown stage (known stages: {', '.join(STAGES)})")
        if settings is False:
            if name in REQUIRED_STAGES:
                raise ConfigError(f"stages.{name}: this stage is required and cannot be turned off")
            continue
        stages[name] = build(STAGES[name], {} if settings is True else settings, f"stages.{name}")
        stages[name].resolve_local_paths(Path.cwd())  # workers run elsewhere: they get absolute paths
    for name in REQUIRED_STAGES:
        if name not in stages:
            stages[name] = STAGES[name]()
    _check_text_source(stages)
    _check_measured_columns(stages)
    return Config(
        run=build(RunConfig, data.get("run"), "run"),
        input=build(InputConfig, data.get("input"), "input"),
        storage=build(StorageConfig, data.get("storage"), "storage"),
        stages=stages,
    )


def _check_measured_columns(stages: dict[str, Stage]) -> None:
    """A keep expression naming a signals/nsfw column whose stage (or group) is off would reject every
    clip (NULL fails): say so at start."""
    from schemas.signals import NSFW_FIELDS, SIGNAL_FIELDS

    keep = getattr(stages.get("filter"), "expression", None)
    if keep is None:
        return
    made = {f.name for stage in stages.values() for f in stage.catalog_fields}
    groups = {f.name: f"stage signals ({group}: true)" for group, fs in SIGNAL_FIELDS.items() for f in fs}
    groups.update({f.name: "stage nsfw" for f in NSFW_FIELDS})
    missing = [c for c in keep.used if c in groups and c not in made]
    if missing:
        raise ConfigError(f"stages.filter.keep: {missing[0]} is written by {groups[missing[0]]}, which this "
                          "config does not run: every clip would be rejected")
    motion = [c for c in keep.used if c in {f.name for f in SIGNAL_FIELDS["motion"]}]
    if motion and stages["split"].sample_frames < 2:
        raise ConfigError(f"stages.filter.keep: {motion[0]} needs two sampled frames per clip, and "
                          f"stages.split.sample_frames is {stages['split'].sample_frames}: every clip would be rejected")


def _check_text_source(stages: dict[str, Stage]) -> None:
    """Text embeddings need captions: encode embeds caption_long/caption_short, which only expand writes.

    Without it every shard row would carry no text and the trainer would have nothing to condition on;
    say so at start rather than after hours of encoding."""
    encode = stages.get("encode")
    if encode is not None and encode.text_encoder and "expand" not in stages:
        raise ConfigError("stages.encode.text_encoder: encode embeds caption_long/caption_short, which only "
                          "stage expand writes (after caption); enable stages.caption and stages.expand, or set "
                          "text_encoder: null for latents without text (then train with data.unconditional)")
