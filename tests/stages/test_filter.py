"""Stage filter: SQL keep expressions over scores, evaluated by DuckDB; bad ones fail at config time."""
import pickle

import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import load_config
from pipeline.typed import ConfigError
from stages.filter import Filter

NAN = float("nan")


def clips() -> pa.Table:
    """Six in-flight rows: scores, a float16 embedding and frames, as clip_score leaves them."""
    emb = [np.full(4, v, np.float16) for v in (0.5, 0.25, 1, 2, 3, 4)]
    return pa.table({
        "clip_id": ["a", "b", "c", "d", "e", "f"],
        "status": ["accepted", "accepted", "accepted", "accepted", "rejected", "accepted"],
        "reason": [None, None, None, None, "too_short", None],
        "duration_s": [3.0, 8.0, 5.0, 2.5, 1.0, 4.0],
        "clip_aesthetic": pa.array([5.0, 4.0, 6.0, None, None, 5.5], pa.float32()),
        "clip_text_overlay": pa.array([0.1, 0.1, 0.9, 0.2, None, 0.1], pa.float32()),
        "clip_embedding": pa.array(emb, pa.list_(pa.float16())),
        "frames": pa.array([b"\x00" * 12] * 6, pa.binary()),
    })


def test_failing_clips_are_rejected_with_the_conditions_they_failed():
    stage = Filter(keep="clip_aesthetic >= 4.5 AND clip_text_overlay < 0.5 AND duration_s BETWEEN 2 AND 6")
    table = clips()
    out = stage(table)
    assert out.column("status").to_pylist() == ["accepted", "rejected", "rejected", "rejected", "rejected", "accepted"]
    assert out.column("reason").to_pylist() == [
        None,
        "filter:clip_aesthetic >= 4.5; duration_s BETWEEN 2 AND 6",  # both failed terms are named
        "filter:clip_text_overlay < 0.5",
        "filter:clip_aesthetic >= 4.5",  # NULL fails, as in SQL's WHERE
        "too_short",  # already rejected: untouched
        None,
    ]
    others = [c for c in table.column_names if c not in ("status", "reason")]
    assert out.select(others).equals(table.select(others))  # every score kept, rows in order


def test_or_and_parentheses_stay_one_condition():
    stage = Filter(keep="(clip_aesthetic > 5.5 OR duration_s < 3) AND NOT clip_text_overlay > 0.5")
    assert stage.expression.conditions == ["(clip_aesthetic > 5.5) OR (duration_s < 3)",
                                           "NOT (clip_text_overlay > 0.5)"]
    out = stage(clips())
    first, second = "filter:(clip_aesthetic > 5.5) OR (duration_s < 3)", "filter:NOT (clip_text_overlay > 0.5)"
    assert out.column("reason").to_pylist()[:4] == [first, first, second, None]  # d: NULL OR true is true


def test_sql_functions_and_list_columns_work():
    stage = Filter(keep="list_max(clip_embedding) < 3 AND coalesce(clip_aesthetic, 0) >= 0 AND status = 'accepted'")
    assert stage(clips()).column("status").to_pylist() == ["accepted", "accepted", "accepted", "accepted",
                                                           "rejected", "rejected"]


def test_no_keep_expression_keeps_everything_and_constants_work():
    table = clips()
    assert Filter()(table).equals(table)
    assert Filter(keep="true")(table).equals(table)
    assert Filter(keep="false")(table).column("reason").to_pylist() == ["filter:false"] * 4 + ["too_short",
                                                                                              "filter:false"]


def test_filter_survives_pickling_as_ray_ships_it():
    stage = pickle.loads(pickle.dumps(Filter(keep="clip_aesthetic >= 5")))
    assert stage(clips()).column("status").to_pylist()[:3] == ["accepted", "rejected", "accepted"]


def test_a_configured_prompt_column_missing_from_the_batch_is_a_clear_error():
    stage = Filter(keep="clip_cartoon < 0.5")  # clip_* columns may come from configured prompts
    with pytest.raises(KeyError, match="no column \\['clip_cartoon'\\]"):
        stage(clips())


@pytest.mark.parametrize("keep, message", [
    ("clip_aesthetic >=", "not a SQL expression: syntax error"),
    ("aesthetic > 4", "unknown column 'aesthetic'"),
    ("clip_aesthetic + 1", "must be a boolean condition, this gives FLOAT"),
    ("max(clip_aesthetic) > 4", "aggregates are not allowed"),
    ("clip_id IN (SELECT clip_id FROM clips)", "subqueries are not allowed"),
    ("rank() OVER (ORDER BY clip_aesthetic) < 10", "window functions are not allowed"),
    ("random() < 0.5", "random() would make the filter differ between runs"),
    ("1) FROM clips; DROP TABLE clips; SELECT (1", "not a SQL expression"),
    ("clip_aesthetic > 4 ORDER BY 1", "not a SQL expression"),
    ("no_such_function(clip_aesthetic)", "Catalog Error"),
    ("clip_aesthetic > 'high'", "Conversion Error"),
    ("", "must be a non-empty SQL expression"),
])
def test_bad_expressions_fail_at_config_time(keep, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"stages.filter.keep={keep!r}" if keep else "stages.filter.keep=''"])
    assert str(err.value).startswith("stages.filter.keep: ") and message in str(err.value), str(err.value)


@pytest.mark.parametrize("override, message", [
    ("stages.filter.near_duplicate_distance=-0.1", "stages.filter.near_duplicate_distance: must be in [0, 2)"),
    ("stages.filter.dedup_bands=0", "stages.filter.dedup_bands: must be in 1..256"),
    ("stages.filter.near_duplicate_streaming=3", "stages.filter.near_duplicate_streaming: "),
])
def test_bad_dedup_settings_fail_at_config_time(override, message):
    with pytest.raises(ConfigError, match=None) as err:
        load_config(None, [override])
    assert str(err.value).startswith(message)
