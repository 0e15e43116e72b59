"""The grouped reader: one open per source, spans in one pass, and `ahead`, its prefetching thread (issue 15)."""
from __future__ import annotations

import pytest

from pipeline.kit.synth import read_stamp, write_stamped_video
from stages.video.decode import OPENS, SpanRequest, ahead, read_spans


@pytest.fixture(scope="module")
def stamped(tmp_path_factory):
    # open GOPs with B-frames; a long middle scene so that one span is far enough ahead to be seeked to
    path, _, times = write_stamped_video(tmp_path_factory.mktemp("reads"), "h264_mp4_open_gop", [30, 130, 30])
    return str(path), times


def test_spans_of_one_source_are_one_open_and_one_pass_in_frame_order(stamped):
    stamped, times = stamped
    # asked out of order; "overlap" starts behind where "first" ended (decoded again from a seek), "later"
    # continues the pass, "far" is 150 frames (6 s) ahead: seeked to by its time
    wanted = {"far": [170, 175, 189], "first": [0, 3, 6], "later": [20, 26], "next": [8, 9], "overlap": [5, 12]}
    requests = [SpanRequest(k, v, 64, 36, (170, times[170]) if k == "far" else None) for k, v in wanted.items()]
    before = OPENS[stamped]
    got = {r.key: frames for r, frames in read_spans(stamped, None, requests, 1, None)}
    assert OPENS[stamped] - before == 1
    for key, indices in wanted.items():
        assert not isinstance(got[key], Exception), got[key]
        assert got[key].shape == (len(indices), 36, 64, 3)
        assert [read_stamp(f) for f in got[key]] == indices
    past_end = list(read_spans(stamped, None, [SpanRequest("end", [185, 400], 64, 36, None),
                                               SpanRequest("ok", [1], 64, 36, None)], 1, None))
    assert isinstance(past_end[1][1], IndexError)  # the bad span fails alone
    assert [read_stamp(f) for f in past_end[0][1]] == [1]


def test_ahead_yields_the_same_items_and_raises_where_the_producer_failed():
    def items():
        yield from range(5)
        raise ValueError("boom")

    seen = []
    with pytest.raises(ValueError, match="boom"):
        for item in ahead(items(), depth=1):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]


