import pyarrow as pa
import pytest

from schemas.catalog import CLIPS, VIDEOS, conform, validate
from schemas.ids import clip_id


def test_conform_casts_fills_nullable_and_refuses_missing_required():
    table = pa.table({"video_id": ["v"], "source_uri": ["a.mp4"], "status": ["ok"], "wave_id": ["w"],
                      "width": pa.array([10], pa.int64()), "extra": [1]})
    out = conform(table, VIDEOS)
    assert out.schema.equals(VIDEOS) and out.column("width").type == pa.int32()
    assert out.column("cuts").null_count == 1
    with pytest.raises(ValueError, match="'clip_id'"):
        conform(table, CLIPS)


def test_validate_names_every_problem():
    bad = pa.table({"video_id": pa.array([None], pa.string())})
    with pytest.raises(ValueError) as err:
        validate(bad, VIDEOS)
    assert "'video_id' has 1 nulls" in str(err.value) and "missing column 'source_uri'" in str(err.value)


def test_clip_id_depends_on_video_and_span():
    video = "074b1192-171a-bc7b-e30c-63cf9f57f367"
    assert clip_id(video, 0, 10) == clip_id(video, 0, 10)
    assert len({clip_id(video, 0, 10), clip_id(video, 0, 11), clip_id(video, 1, 10)}) == 3
