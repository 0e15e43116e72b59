"""Data contracts: one explicit pyarrow schema per persisted table, versioned.

Writers call `conform(table, SCHEMA)` before writing; tests assert against the
same objects, so a column can't change type without a test noticing.
"""
from schemas.catalog import CLIPS, SCHEMA_VERSION, VIDEO_INFO, VIDEOS, conform, extend, validate

__all__ = ["CLIPS", "VIDEO_INFO", "VIDEOS", "SCHEMA_VERSION", "conform", "extend", "validate"]
