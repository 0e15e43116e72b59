"""clip_score + filter through `vidprep run`: near-duplicates, refilter, search, the Ray plan."""
import contextlib
import io

import numpy as np
import pytest

from pipeline import cli
from pipeline.catalog.views import connect
from pipeline.store.commit import CommitLog, _file_hash
from pipeline.store.status import StatusLog
from pipeline.kit.synth import write_video

STAGES = ("probe", "split", "clip_score", "filter")
KEEP = "clip_frame_consistency >= 0.9 AND clip_black < 0.9"  # clip_score's columns only (no signals stage here)
TEXT = "a disc bouncing over stripes"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from pipeline.kit.tiny.clip import build

    return build(tmp_path_factory.mktemp("models") / "clip")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dupes")
    write_video(folder / "a.mp4", [60, 72], width=160, height=96, seed=1)
    write_video(folder / "b_mpeg4.mp4", [60, 72], width=160, height=96, seed=1, codec="mpeg4")  # a, re-encoded
    write_video(folder / "c_black.mp4", [60, 60, 60], width=160, height=96, seed=4, black_scenes=(0, 2))
    write_video(folder / "d_resized.mp4", [60, 72], width=192, height=112, seed=1)  # a's scenes, re-encoded
    # The tiny model is random: its embeddings mostly see colour, so some unrelated synthetic scenes sit
    # within 0.002 of each other. These seeds' scenes are >= 0.02 apart; copies are < 1e-4 apart.
    write_video(folder / "e_other.mp4", [96], width=160, height=96, seed=5)
    (folder / "a.txt").write_text(TEXT)
    return folder


def vidprep(*args) -> tuple[int, str]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli.main([str(a) for a in args])
    return code, stdout.getvalue()


def run_args(demo_yaml, models, videos, out, runner="sequential"):
    return ["run", "-c", demo_yaml(STAGES), "-i", videos, "-o", out, "--runner", runner, "--no-progress",
            "--set", "stages.filter.near_duplicate_distance=0.005", "--set", f"stages.filter.keep={KEEP}",
            "--set", f"stages.clip_score.model_config={models['clip_config']}",
            "--set", f"stages.clip_score.pretrained={models['clip']}",
            "--set", f"stages.clip_score.aesthetic={models['clip_aesthetic']}"]


@pytest.fixture(scope="module")
def out(demo_yaml, models, videos, tmp_path_factory):
    folder = tmp_path_factory.mktemp("out")
    code, printed = vidprep(*run_args(demo_yaml, models, videos, folder))
    assert code == 0
    assert "near-duplicates  cosine distance <= 0.005 (32 LSH bands): 5 found" in printed
    return folder


def clips(out, columns="clip_id, status, reason"):
    return connect(out).execute(f"""SELECT regexp_extract(source_uri, '[^/]+$') AS video, clip_index, {columns}
                                    FROM clips ORDER BY video, clip_index""").fetchall()


def test_near_duplicates_are_caught_within_and_across_videos(out):
    rows = {(v, i): (cid, status, reason) for v, i, cid, status, reason in clips(out)}
    a0, a1 = rows["a.mp4", 0][0], rows["a.mp4", 1][0]
    black0 = rows["c_black.mp4", 0][0]
    assert {k: v[1:] for k, v in rows.items()} == {
        ("a.mp4", 0): ("accepted", None), ("a.mp4", 1): ("accepted", None),
        ("b_mpeg4.mp4", 0): ("rejected", f"near_duplicate_of:{a0}"),  # another codec, later source
        ("b_mpeg4.mp4", 1): ("rejected", f"near_duplicate_of:{a1}"),
        ("c_black.mp4", 0): ("accepted", None), ("c_black.mp4", 1): ("accepted", None),
        ("c_black.mp4", 2): ("rejected", f"near_duplicate_of:{black0}"),  # the same black scene again
        ("d_resized.mp4", 0): ("rejected", f"near_duplicate_of:{a0}"),  # other size, other ids
        ("d_resized.mp4", 1): ("rejected", f"near_duplicate_of:{a1}"),
        ("e_other.mp4", 0): ("accepted", None),
    }
    # Rejected rows keep every score; the stream's own status (clips_written) is untouched.
    scored = connect(out).execute("""SELECT count(*) FROM clips WHERE status = 'rejected' AND clip_embedding
                                     IS NOT NULL AND clip_aesthetic IS NOT NULL AND clip_motion IS NOT NULL""")
    assert scored.fetchall()[0][0] == 5
    assert connect(out).execute("SELECT count(*) FROM clips_written WHERE status = 'accepted'").fetchall()[0][0] == 10


def test_scores_are_stored_as_catalog_columns(out):
    import pyarrow.parquet as pq

    schema = pq.read_schema(CommitLog(out).files("clips")[0])
    assert str(schema.field("clip_embedding").type) == "list<element: halffloat>"
    dims = connect(out).execute("SELECT DISTINCT len(clip_embedding) FROM clips").fetchall()
    assert dims == [(32,)]
    similarity = {v: s for v, _, s in clips(out, "clip_text_similarity")}
    assert similarity["a.mp4"] is not None and similarity["b_mpeg4.mp4"] is None  # only a.mp4 has a .txt


def test_a_rerun_changes_nothing(demo_yaml, models, videos, out):
    versions = len(StatusLog(out).records())
    before = clips(out)
    code, printed = vidprep(*run_args(demo_yaml, models, videos, out))
    assert code == 0 and "nothing written" in printed
    assert len(StatusLog(out).records()) == versions and clips(out) == before


def test_search_ranks_like_numpy_cosine_of_the_stored_embeddings(out):
    from pipeline.catalog.search import load_model_of, search

    clip = load_model_of(out)  # the run's model, from run.json
    query = clip.encode_texts([TEXT])[0]
    rows = connect(out).execute("""SELECT clip_id, source_uri, status, clip_embedding FROM clips
                                   WHERE clip_embedding IS NOT NULL""").fetchall()
    vectors = np.array([r[3] for r in rows], np.float32)
    scores = vectors @ query / np.linalg.norm(vectors, axis=1)
    for include_rejected in (True, False):
        pool = [i for i, r in enumerate(rows) if include_rejected or r[2] == "accepted"]
        expected = sorted(pool, key=lambda i: (-scores[i], rows[i][0], rows[i][1]))[:6]
        found = search(out, TEXT, k=6, include_rejected=include_rejected, clip=clip)
        assert list(zip(found.column("clip_id").to_pylist(), found.column("source_uri").to_pylist())) == \
            [rows[i][:2] for i in expected]
        assert np.allclose(found.column("score").to_numpy(), scores[expected], atol=1e-5)
        assert found.column("rank").to_pylist() == list(range(1, len(expected) + 1))


def test_search_command_prints_results_and_writes_thumbnails(out, tmp_path):
    code, printed = vidprep("search", out, TEXT, "-k", "3", "--thumbnails", tmp_path)
    assert code == 0 and "(3 rows)" in printed
    files = sorted(tmp_path.glob("*.jpg"))
    assert [f.name[:4] for f in files] == ["001-", "002-", "003-"]
    assert all(f.read_bytes()[:2] == b"\xff\xd8" for f in files)
    assert all(f.name[4:40] in printed for f in files)  # the clip ids


def test_refilter_round_trip_recomputes_nothing(out, monkeypatch):
    import stages.models.clip

    monkeypatch.setattr(stages.models.clip, "load_clip", lambda *a, **k: pytest.fail("refilter loaded a model"))
    before = clips(out)
    con = connect(out)
    threshold = con.execute("SELECT median(clip_black) FROM clips_written WHERE status = 'accepted'").fetchall()[0][0]
    too_black = {r[0] for r in con.execute(f"""SELECT source_uri || clip_id FROM clips_written
                                              WHERE status = 'accepted' AND clip_black >= {threshold}""").fetchall()}
    versions = len(StatusLog(out).records())

    code, printed = vidprep("refilter", out, "--keep", f"clip_black < {threshold}")
    assert code == 0
    after = connect(out).execute("SELECT source_uri || clip_id, status, reason FROM clips").fetchall()
    assert {k for k, _, reason in after if (reason or "").startswith("filter:")} == too_black
    assert all(reason == f"filter:clip_black < {threshold}" for k, _, reason in after if k in too_black)
    changed = sum(1 for old, new in zip(before, clips(out)) if old[3:] != new[3:])
    assert changed > 0 and f"changed          {changed} clips" in printed
    assert len(StatusLog(out).records()) == versions + 1

    code, printed = vidprep("refilter", out, "--keep", KEEP)  # back to the run's expression
    assert code == 0 and clips(out) == before
    for record in CommitLog(out).records():  # the committed catalog files were never rewritten
        assert all(_file_hash(out / f["path"]) == f["blake2b"] for f in record["files"])


def test_refilter_dry_run_and_bad_expressions_write_nothing(out, capsys):
    versions = len(StatusLog(out).records())
    code, printed = vidprep("refilter", out, "--keep", "clip_black < 0", "--dry-run")
    assert code == 0 and "dry run: nothing written" in printed and "accepted → rejected (filter)" in printed
    assert vidprep("refilter", out, "--keep", "clip_blak < 0.5")[0] == 2
    assert "keep: unknown column 'clip_blak'" in capsys.readouterr().err
    assert len(StatusLog(out).records()) == versions


def test_a_refilter_sticks_for_later_runs(out):
    from pipeline.config import load_config
    from pipeline.catalog.refilter import after_run

    assert vidprep("refilter", out, "--keep", "clip_black < 0.6", "--no-dedup")[0] == 0
    outcome = after_run(out, load_config(None))  # a run with other filter settings, nothing new
    assert (outcome.keep, outcome.near_duplicate_distance, outcome.version) == ("clip_black < 0.6", None, None)
    assert vidprep("refilter", out, "--keep", KEEP, "--near-duplicate-distance", "0.005")[0] == 0


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_the_ray_plan_gives_the_same_catalog(demo_yaml, models, videos, out, tmp_path):
    """In two runs appended to one output: the copies of run 1's clips (b, d) are rejected in run 2's
    stream, by Ray tasks holding the snapshot of run 1's kept clips; the statuses are the one run's."""
    import shutil

    import ray

    first, later = ("a.mp4", "a.txt", "c_black.mp4", "e_other.mp4"), ("b_mpeg4.mp4", "d_resized.mp4")
    (tmp_path / "in").mkdir()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        for names in (first, later):
            for name in names:
                shutil.copy(videos / name, tmp_path / "in" / name)
            code, printed = vidprep(*run_args(demo_yaml, models, tmp_path / "in", tmp_path / "ray", runner="ray"))
            assert code == 0
    finally:
        ray.shutdown()
    assert "(32 LSH bands): 4 found (4 already in the stream, before the model stages)" in printed  # run 2's
    streamed = connect(tmp_path / "ray").execute("""SELECT regexp_extract(source_uri, '[^/]+$'), reason
                                                    FROM clips_written WHERE status = 'rejected'""").fetchall()
    assert sorted(v for v, reason in streamed if reason.startswith("near_duplicate_of:")) == \
        ["b_mpeg4.mp4", "b_mpeg4.mp4", "d_resized.mp4", "d_resized.mp4"]
    columns = "clip_id, status, reason, clip_embedding, clip_aesthetic, clip_black, clip_motion"
    for seq, par in zip(clips(out, columns), clips(tmp_path / "ray", columns), strict=True):
        assert seq[:5] == par[:5]
        assert np.allclose(seq[5], par[5], atol=1e-3) and np.allclose(seq[6:], par[6:], atol=1e-5)
