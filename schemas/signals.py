"""Columns of stage `signals` (pixel statistics, motion, text on screen) and stage `nsfw`, by group.

Declared here, not in the stages, because `filter` checks keep expressions against them and stages do not
import each other. What each number means: stages/video/pixels.py, stages/video/motion.py, stages/models/ocr.py.
"""
from __future__ import annotations

import pyarrow as pa

PIXEL_FIELDS = (
    pa.field("luma_mean", pa.float32()), pa.field("luma_std", pa.float32()),
    pa.field("black_fraction", pa.float32()), pa.field("sharpness", pa.float32()),
    pa.field("colourfulness", pa.float32()),
)
MOTION_FIELDS = (
    pa.field("motion_flow_px", pa.float32()),
    pa.field("camera_motion", pa.string()), pa.field("camera_motion_confidence", pa.float32()),
    pa.field("camera_pan_px", pa.float32()), pa.field("camera_tilt_px", pa.float32()),
    pa.field("camera_zoom", pa.float32()), pa.field("camera_rotation", pa.float32()),
    pa.field("motion_subject_share", pa.float32()),
    pa.field("motion_frozen_fraction", pa.float32()), pa.field("motion_jump_fraction", pa.float32()),
    pa.field("motion_frozen", pa.bool_()),
)
TEXT_FIELDS = (pa.field("text_area", pa.float32()), pa.field("text_boxes", pa.int32()))
NSFW_FIELDS = (pa.field("nsfw_score", pa.float32()),)

SIGNAL_FIELDS = {"pixels": PIXEL_FIELDS, "motion": MOTION_FIELDS, "text": TEXT_FIELDS}
