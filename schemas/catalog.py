"""Schemas of the catalog tables: `catalog/videos` and `catalog/clips`.

Every source video gets exactly one `videos` row (status ok|error), every clip
exactly one `clips` row (status accepted|rejected|error), whether or not it is
kept for training: thresholds change later in SQL without recomputing.
"""
from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1"

VIDEOS = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),  # uuid from size + sampled bytes
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # ok | error
        pa.field("error", pa.string()),  # why status is error: "<code>: <detail>"
        pa.field("warning", pa.string()),  # e.g. decoding stopped early; clips before it kept
        pa.field("size_bytes", pa.int64()),
        pa.field("container", pa.string()),
        pa.field("codec", pa.string()),
        pa.field("pix_fmt", pa.string()),
        pa.field("bit_rate", pa.int64()),
        pa.field("duration_s", pa.float64()),
        pa.field("fps", pa.float64()),
        pa.field("num_frames", pa.int64()),  # frames decoded by split (container count if not split)
        pa.field("width", pa.int32()),  # display size, after rotation
        pa.field("height", pa.int32()),
        pa.field("rotation", pa.int32()),  # degrees counter-clockwise from the display matrix
        pa.field("has_audio", pa.bool_()),
        pa.field("stream_index", pa.int32()),  # the container stream decoded (probe's choice among video streams)
        pa.field("decoder", pa.string()),  # decord | pyav: split's reader, whose frame k every later read uses
        pa.field("cuts", pa.list_(pa.int64())),  # detected cut frames: first frame of each new scene
        # split's `detector: transnetv2` only: every frame's shot-transition probability (re-threshold later)
        pa.field("shot_probabilities", pa.list_(pa.float32())),
        pa.field("num_clips", pa.int32()),
        pa.field("wave_id", pa.string(), nullable=False),
    ],
    metadata={"vidprep.table": "videos", "vidprep.schema_version": SCHEMA_VERSION},
)

# What probe and split know about a source video, carried on every in-flight row
# as one struct column (`video`) so clip rows and video fields never collide.
VIDEO_INFO = pa.struct([f for f in VIDEOS if f.name != "wave_id"])

CLIPS = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),  # uuid5(video_id, start:end)
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("clip_index", pa.int32(), nullable=False),
        pa.field("scene_index", pa.int32(), nullable=False),
        pa.field("start_frame", pa.int64(), nullable=False),
        pa.field("end_frame", pa.int64(), nullable=False),  # exclusive
        pa.field("num_frames", pa.int64(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("fps", pa.float64(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # accepted | rejected | error
        pa.field("reason", pa.string()),  # "<code>" or "<code>:<detail>"; null when accepted
        pa.field("sample_frame_indices", pa.list_(pa.int64())),
        pa.field("thumbnail", pa.binary()),  # small JPEG of the middle sampled frame
        pa.field("wave_id", pa.string(), nullable=False),
    ],
    metadata={"vidprep.table": "clips", "vidprep.schema_version": SCHEMA_VERSION},
)


def extend(schema: pa.Schema, fields) -> pa.Schema:
    """`schema` plus the columns later stages add (a name may be added twice only with one type)."""
    for field in fields:
        index = schema.get_field_index(field.name)
        if index < 0:
            schema = schema.append(field)
        elif not schema.field(index).type.equals(field.type):
            raise ValueError(f"column {field.name!r} added as {field.type}, already {schema.field(index).type}")
    return schema


def validate(table: pa.Table, schema: pa.Schema) -> None:
    """Raise ValueError naming each column that is missing, mistyped or null where it may not be."""
    problems = []
    for field in schema:
        if field.name not in table.column_names:
            problems.append(f"missing column {field.name!r}")
            continue
        column = table.column(field.name)
        if not column.type.equals(field.type):
            problems.append(f"column {field.name!r} is {column.type}, expected {field.type}")
        elif not field.nullable and column.null_count:
            problems.append(f"column {field.name!r} has {column.null_count} nulls")
    if problems:
        name = (schema.metadata or {}).get(b"vidprep.table", b"?").decode()
        raise ValueError(f"table {name!r} does not match its schema: " + "; ".join(problems))


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast `table`'s columns to `schema` (absent nullable columns become nulls), then validate."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name)
            if not column.type.equals(field.type):
                column = column.cast(field.type)
        elif field.nullable:
            column = pa.nulls(table.num_rows, field.type)
        else:
            raise ValueError(f"cannot write {field.name!r}: the column is required and missing")
        columns.append(column)
    result = pa.Table.from_arrays(columns, schema=schema)
    validate(result, schema)
    return result
