import numpy as np

from stages.video.spans import SceneFrames, Span, pick_samples, plan_clips


def spans(*args, **kw):
    return [(s.start, s.end, s.status, s.reason) for s in plan_clips(*args, **kw)]


def test_trim_only_at_detected_cuts():
    assert spans(0, 100, 0, cut_before=False, cut_after=True, trim=3, min_frames=10, max_frames=200) == [
        (0, 97, "accepted", None)]
    assert spans(100, 200, 1, cut_before=True, cut_after=False, trim=3, min_frames=10, max_frames=200) == [
        (103, 200, "accepted", None)]


def test_long_scene_resplit_into_equal_parts_within_max():
    result = plan_clips(0, 1000, 0, cut_before=False, cut_after=False, trim=0, min_frames=10, max_frames=300)
    assert len(result) == 4
    assert all(s.end - s.start <= 300 for s in result)
    assert [s.start for s in result[1:]] == [s.end for s in result[:-1]]  # contiguous, nothing lost
    assert result[0].start == 0 and result[-1].end == 1000
    assert max(s.end - s.start for s in result) - min(s.end - s.start for s in result) <= 1


def test_short_scene_kept_as_rejected():
    assert spans(0, 20, 0, cut_before=True, cut_after=True, trim=2, min_frames=48, max_frames=240) == [
        (2, 18, "rejected", "too_short")]
    # trimming eats a 3-frame scene: the untrimmed span is kept, rejected
    assert plan_clips(10, 13, 2, cut_before=True, cut_after=True, trim=2, min_frames=1, max_frames=9) == [
        Span(10, 13, 2, "rejected", "too_short")]


def test_scene_frames_buffer_is_bounded_and_spread():
    buffer = SceneFrames(capacity=8)
    for i in range(100):
        buffer.add(i, np.full((2, 2, 3), i, np.uint8))
    assert len(buffer.indices) <= 8
    assert buffer.indices[0] == 0 and buffer.indices[-1] >= 80
    indices, frames = buffer.pop_before(50)
    assert all(i < 50 for i in indices) and all(f[0, 0, 0] == i for i, f in zip(indices, frames))
    assert all(i >= 50 for i in buffer.indices)


def test_pick_samples_prefers_frames_inside_the_clip():
    indices = np.arange(0, 100, 5)
    picks = pick_samples(indices, 20, 40, 4)
    assert list(indices[picks]) == [20, 25, 30, 35]
