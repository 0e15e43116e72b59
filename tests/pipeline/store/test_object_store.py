"""Outputs (and inputs) on an object store: a real S3-compatible server on 127.0.0.1 (moto's)."""
import json
import logging

import pytest

from pipeline.catalog.views import connect, query
from pipeline.config import load_config
from pipeline.run.listing import list_sources
from pipeline.report.html import write_report
from pipeline.run.runner import run
from pipeline.store.commit import CommitLog
from pipeline.store.lease import OutputTaken, StoreLease
from pipeline.store.location import Location, with_endpoint
from pipeline.store.ownership import claim_output
from pipeline.typed import ConfigError


def rows(out) -> tuple[list, list]:
    """The catalog's content, with sources named by file name (the two runs read them from different places)."""
    con = connect(out)
    clips = con.execute("SELECT clip_id, video_id, regexp_extract(source_uri, '([^/?]+)([?].*)?$', 1), start_frame, "
                        "end_frame, status, reason FROM clips ORDER BY 1").fetchall()
    videos = con.execute("SELECT regexp_extract(source_uri, '([^/?]+)([?].*)?$', 1), video_id, status, cuts, num_clips "
                         "FROM videos ORDER BY 1").fetchall()
    return clips, videos


def test_run_from_store_to_store_equals_the_local_run(corpus_dir, demo_config, tmp_path, s3_bucket, monkeypatch):
    source = s3_bucket.upload(corpus_dir, "videos")
    out = s3_bucket("out")
    local = run(demo_config, corpus_dir, tmp_path / "local", progress=False)
    copies = count_local_copies(monkeypatch)
    remote = run(demo_config, source, out, progress=False)
    assert (remote.processed, remote.clips) == (3, local.clips) and local.clips > 0
    # Probe reads byte ranges; split copies each remote video once (not once per clip).
    assert sorted(copies) == sorted(u for (u,) in connect(out).execute("SELECT source_uri FROM videos").fetchall())
    assert rows(out) == rows(tmp_path / "local")
    # Every listed source keeps the endpoint: a worker opening it reaches this server, not AWS.
    uris = [u for (u,) in connect(out).execute("SELECT source_uri FROM videos").fetchall()]
    assert all(u.startswith("s3://") and "endpoint_override=127.0.0.1:" in u for u in uris)
    # Nothing in the bucket but what records list, and the records, manifest, marker and run.json.
    data = {k for k in s3_bucket.keys("out/") if k.startswith(("out/catalog/", "out/shards/"))}
    listed = {f"out/{p}" for w in CommitLog(out).records() for p in (f["path"] for f in w["files"])}
    assert data == listed and data
    assert json.loads(Location.of(out).read_bytes("run.json"))["counts"]["clips_committed"] == local.clips
    assert query(out, "SELECT count(*) AS n FROM clips").column("n").to_pylist() == [local.clips]
    with pytest.raises(PermissionError):
        query(out, "COPY clips TO 'x.csv'")
    # Records without manifest segments (a kill after a record, before its segment): read from the records.
    before = rows(out)
    for key in s3_bucket.keys("out/_manifest/"):
        s3_bucket.client.delete_object(Bucket=s3_bucket.bucket, Key=key)
    assert rows(out) == before
    report = write_report(out)  # default: beside the records, on the store
    assert report == Location.of(out).uri("report.html")
    assert b"vidprep dataset report" in Location.of(out).read_bytes("report.html")
    # A second run on the same output: everything is committed, nothing is redone.
    again = run(demo_config, source, out, progress=False)
    assert (again.skipped, again.processed) == (3, 0)


def count_local_copies(monkeypatch) -> list[str]:
    """The source URIs copied to local temporary files, one entry per copy (the real copy is made)."""
    import stages.probe
    import stages.split
    import stages.video.decode
    from stages.video import source

    copies, real = [], source.local_copy

    def counting(uri):
        if "://" in uri:
            copies.append(uri)
        return real(uri)

    for module in (stages.probe, stages.split, stages.video.decode):
        monkeypatch.setattr(module, "local_copy", counting)
    return copies


def test_a_second_run_on_the_same_store_output_refuses(corpus_dir, demo_config, s3_bucket):
    out = s3_bucket("out")
    claim_output(out)  # as a first run does, before it takes the lease
    with StoreLease(Location.of(out), run_id="first"):  # a run of this process holds the output
        with pytest.raises(OutputTaken, match="another vidprep run is writing to s3://.*run 'first'"):
            run(demo_config, corpus_dir, out, progress=False)
    assert run(demo_config, corpus_dir, out, progress=False).processed == 3  # released: the next run goes


def test_the_lease_goes_to_one_of_two_runs_that_race(s3_bucket):
    loc = Location.of(s3_bucket("out"))
    assert loc.create_exclusive("_lease/0000000001.json", b"{}")
    assert not loc.create_exclusive("_lease/0000000001.json", b"{}")  # the server refuses the second create


def test_a_dead_holders_lease_is_taken_over(s3_bucket):
    loc = Location.of(s3_bucket("out"))
    dead = {"owner": "x", "host": __import__("socket").gethostname(), "pid": 2 ** 22 + 7, "run": "killed",
            "expires_at": 4e9, "released": False}
    loc.write_bytes("_lease/0000000003.json", json.dumps(dead).encode())
    with StoreLease(loc) as lease:
        assert lease.generation == 4
    assert json.loads(loc.read_bytes("_lease/0000000004.json"))["released"] is True
    assert not loc.exists("_lease/0000000003.json")  # older generations are cleaned up


def test_listed_store_sources_keep_the_uri_parameters(s3_bucket, corpus_dir):
    source = s3_bucket.upload(corpus_dir, "in")
    listed = list(list_sources(source, [".mp4"]))
    assert len(listed) == 3
    assert all(u.split("?")[1] == source.split("?")[1] for u in listed)


def test_an_s3_uri_without_an_endpoint_says_so(monkeypatch, caplog):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    with caplog.at_level(logging.WARNING, logger="vidprep"):
        assert with_endpoint("s3://no-endpoint-bucket/x") .startswith("s3://no-endpoint-bucket/x")
    assert "no endpoint configured for s3://no-endpoint-bucket" in caplog.text
    configured = with_endpoint("s3://b/x", endpoint="http://127.0.0.1:9000", region="eu-west-1")
    assert configured == "s3://b/x?endpoint_override=127.0.0.1:9000&region=eu-west-1&scheme=http"


def test_a_bad_storage_endpoint_names_the_field(demo_yaml):
    with pytest.raises(ConfigError, match="storage.endpoint"):
        load_config(demo_yaml(), ["storage.endpoint=127.0.0.1:9000"])


def test_the_trainers_loader_reads_shards_on_the_store(tmp_path, s3_bucket):
    """A committed output copied into a bucket is an output there: the loader plans and reads it (ranged
    reads through pyarrow's filesystem) exactly as it reads the local copy."""
    import itertools

    import numpy as np

    from pipeline.trainer.index import ShardIndex
    from pipeline.trainer.loader import DataConfig, Loader
    from pipeline.trainer.synthetic import write_shards

    write_shards(tmp_path, {"8x32x32": (4, 2, 4, 4), "1x32x48": (4, 1, 4, 6)}, 12, row_group_rows=4, seed=0)
    out = s3_bucket.upload(tmp_path, "out")
    config = {"token_budget": 48, "num_workers": 0, "window_row_groups": 2}

    def batches(data):
        loader = Loader(ShardIndex.open(data), DataConfig(**config), (1, 2), seed=0)
        return list(itertools.islice(iter(loader), loader.steps_per_epoch))

    local, remote = batches(str(tmp_path)), batches(s3_bucket("out/shards"))
    assert len(local) == len(remote) > 0
    for a, b in zip(local, remote):
        assert a["clip_id"] == b["clip_id"] and np.array_equal(a["latent"].numpy(), b["latent"].numpy())
    assert query(out, "SELECT count(*) AS n FROM shards").column("n").to_pylist() == [24]


def test_a_holder_whose_lease_was_taken_stops_before_its_next_commit(s3_bucket):
    loc = Location.of(s3_bucket("out"))
    with StoreLease(loc) as lease:
        assert lease.renew()
        expires = json.loads(loc.read_bytes("_lease/0000000001.json"))["expires_at"]
        assert expires > 0 and not lease.lost
        loc.write_bytes("_lease/0000000002.json", b"{}")  # another run took the next generation (it expired)
        assert not lease.renew()
        with pytest.raises(OutputTaken, match="another run took the output"):
            lease.check()
    assert json.loads(loc.read_bytes("_lease/0000000001.json"))["released"] is False  # not its to release


def test_an_output_prefix_inside_the_input_prefix_is_refused(demo_config, s3_bucket, corpus_dir):
    from pipeline.store.ownership import OutputRefused

    source = s3_bucket.upload(corpus_dir, "raw")
    with pytest.raises(OutputRefused, match="overlaps the input"):
        run(demo_config, source, s3_bucket("raw/out"), progress=False)
    assert s3_bucket.keys("raw/out/") == []  # refused before anything was written


def test_refilter_and_the_incremental_pass_on_the_store_decide_as_on_disk(tmp_path, s3_bucket):
    """Status overlays and the near-duplicate index on a store: the same decisions as on a local disk, and
    the store holds only the overlay files its records list."""
    from pipeline.catalog.refilter import refilter
    from pipeline.kit.catalog import KEEP, write_output
    from pipeline.store.status import StatusLog, record_files

    out = s3_bucket("out")
    decided = {}
    for where in (tmp_path, out):
        pool = None
        for run_index in range(2):  # a run's pass, then the next run's pass decides only the new clips
            written = write_output(where, f"2026010{run_index + 1}T000000-abcdef", waves=1, videos_per_wave=8,
                                   clips_per_video=2, seed=run_index, duplicates=0.6, pool=pool)
            pool = written.vectors[0]
            outcome = refilter(where, KEEP, 0.05, 8, made_by="run", incremental=True)
            assert outcome.version == run_index + 1 and outcome.incremental == (run_index > 0)
        decided[str(where)] = connect(where).sql("SELECT clip_id, status, reason FROM clips ORDER BY 1").fetchall()
    assert decided[str(tmp_path)] == decided[out]
    assert any(r[2] and r[2].startswith("near_duplicate_of:") for r in decided[out])
    listed = {f"out/{f}" for r in StatusLog(out).records() for f in record_files(r, with_index=True)}
    assert set(s3_bucket.keys("out/status/")) == listed
    changed = refilter(out, "clip_frame_consistency >= 0.9", 0.05, 8)  # `vidprep refilter` on the store
    assert changed.version == 3 and changed.changes


def test_compact_on_the_store_keeps_every_row_and_the_next_writer_removes_what_it_replaced(s3_bucket):
    from pipeline.kit.catalog import write_output
    from pipeline.store.compact import compact

    out = s3_bucket("out")
    write_output(out, "20260101T000000-abcdef", waves=4, videos_per_wave=2, clips_per_video=2)
    sql = "SELECT clip_id, status, clip_frame_consistency FROM clips ORDER BY 1"
    before, files_before = connect(out).sql(sql).fetchall(), s3_bucket.keys("out/catalog/")
    done = compact(out)
    assert done.replaced == {"videos": 4, "clips": 4} and connect(out).sql(sql).fetchall() == before
    assert compact(out).wave_id is None  # nothing small left; this writer removed the replaced files
    after = s3_bucket.keys("out/catalog/")
    assert len(after) == 2 and not set(after) & set(files_before)
