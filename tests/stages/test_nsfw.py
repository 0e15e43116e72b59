"""Stage `nsfw`: NudeNet's bundled detector, fed exactly as nudenet feeds it; per-clip max over frames."""
import numpy as np
import pyarrow as pa
import pytest

from pipeline.kit.synth import scene_frames
from stages.nsfw import Nsfw


@pytest.fixture(scope="module")
def stage():
    s = Nsfw(frames_per_run=3)
    s.setup()
    return s


def test_the_letterbox_is_nudenets_own(stage):
    """Our batched input equals nudenet's `_read_image` blob, so the scores are the package's."""
    from nudenet.nudenet import _read_image

    frame = scene_frames(np.random.default_rng(0), 1, 160, 96)[0]
    theirs = _read_image(np.ascontiguousarray(frame[..., ::-1]), 320)[0]  # it reads BGR, as cv2.imread gives
    ours = stage.detector.raw(frame[None])
    expected = stage.detector.session.run(None, {stage.detector.input: theirs})[0]
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-4)  # box rows are pixels (~300)


def test_per_clip_max_over_frames_and_nulls_for_rejected_rows(stage):
    rng = np.random.default_rng(1)
    clips = [scene_frames(rng, 4, 160, 96) for _ in range(2)]
    out = stage(pa.table({"status": ["accepted", "rejected"], "frames": [c.tobytes() for c in clips],
                          "frames_shape": [list(c.shape) for c in clips]}))
    score, rejected = out.column("nsfw_score").to_pylist()
    assert rejected is None
    per_frame = stage.detector.unsafe_scores(clips[0])
    assert score == pytest.approx(float(per_frame.max()), abs=1e-6)  # batches of 3 frames: same max
    assert 0 <= score < 0.2  # a gradient with a disc is not nudity
