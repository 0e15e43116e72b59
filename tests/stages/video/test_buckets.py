import math

import numpy as np
import pytest

from stages.video.buckets import Bucket, assign, bucket_size, centre_crop, frame_indices, parse_ratio, resize_for

RATIOS = [parse_ratio(r) for r in ["9:16", "3:4", "1:1", "4:3", "16:9"]]


@pytest.mark.parametrize("resolution", [64, 256, 512])
def test_bucket_sides_are_multiples_and_keep_the_budget(resolution):
    for ratio in RATIOS:
        height, width = bucket_size(resolution, ratio, 16)
        assert height % 16 == 0 and width % 16 == 0
        assert abs(math.log(width / height) - math.log(ratio)) < 0.25
        assert abs(width * height / resolution**2 - 1) < 0.25


def test_assign_nearest_ratio_largest_budget_without_upscaling_longest_frames():
    kw = dict(resolutions=[256, 512], ratios=RATIOS, frame_counts=[17, 33, 49], target_fps=8, multiple=16)
    assert assign(1920, 1080, 10.0, **kw) == Bucket(49, *bucket_size(512, 16 / 9, 16))
    assert assign(480, 640, 3.0, **kw) == Bucket(17, *bucket_size(512, 3 / 4, 16))  # 3 s covers (17-1)/8 = 2 s
    assert assign(360, 480, 3.0, **kw) == Bucket(17, *bucket_size(256, 3 / 4, 16))  # below 512²: 256
    assert assign(300, 200, 5.0, **kw).height == bucket_size(256, 4 / 3, 16)[0]  # too small for 512: smallest
    assert assign(640, 360, 1.5, **kw) is None  # shorter than (17 - 1) / 8 = 2 s


def test_resize_covers_then_crop_is_minimal():
    bucket = Bucket(17, 144, 256)
    width, height = resize_for(1440, 1080, bucket)  # 4:3 source into a 16:9 bucket
    assert width >= 256 and height >= 144 and (width == 256 or height == 144)
    frames = np.zeros((3, height, width, 3), np.uint8)
    assert centre_crop(frames, bucket).shape == (3, 144, 256, 3)


def test_frame_indices_step_at_target_fps_centred_in_clip():
    indices = frame_indices(100, 200, source_fps=24, count=9, target_fps=8)
    assert np.all(np.diff(indices) == 3)
    assert indices[0] - 100 == pytest.approx(199 - indices[-1], abs=1)
