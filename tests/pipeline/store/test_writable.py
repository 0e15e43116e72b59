"""An output that can't be written (read-only, missing parent on a read-only mount, full disk) stops
`vidprep run` with one line naming the path and the cause, exit 3; nothing half-committed is visible,
and a rerun once it is fixed equals an unbroken run (issue 21).

Root ignores directory permissions, and the tests may run as root (CI), so a read-only folder is a
read-only bind mount and a full disk a tiny tmpfs, both made in a private mount namespace
(`unshare -m`: they vanish with it, nothing on the machine changes). Without root the read-only case
uses a folder without write permission, and the full disk an unprivileged user namespace
(`unshare -rm`) where the kernel allows one.
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.catalog.views import connect
from pipeline.cli import EXIT_OUTPUT, main
from pipeline.kit.synth import write_video
from pipeline.store.commit import CommitLog
from pipeline.store.writable import output_problem

ROOT = Path(__file__).parents[3]
SETTINGS = ["--runner", "sequential", "--no-progress", "--set", "stages.split.decode_short_side=64",
            "--set", "run.wave_size=1"]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|WARNING) ")

# Runs in the namespace: each step is a shell command (mount, cp) or `vidprep` in this process.
DRIVER = r"""
import contextlib, io, json, logging, subprocess, sys
from pipeline.cli import main
results = []
for kind, *args in json.loads(sys.argv[1]):
    if kind == "sh":
        done = subprocess.run(args[0], shell=True, capture_output=True, text=True)
        results.append({"rc": done.returncode, "err": done.stderr})
        if done.returncode:
            break
        continue
    err, out = io.StringIO(), io.StringIO()
    logging.root.handlers.clear()  # main's logging.basicConfig binds to this call's stderr
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = main(args)
        except BaseException as crash:  # a traceback would reach the user: record it as a crash
            rc = "crash: " + repr(crash)
    results.append({"rc": rc, "err": err.getvalue(), "out": out.getvalue()})
print(json.dumps(results))
"""


def in_namespace(steps: list[list[str]], unshare: list[str]) -> list[dict]:
    """The steps' results, run in a private mount namespace (`unshare -m` as root, `-rm` without), or as
    they are with `unshare=[]` (root in a user namespace would override the permissions under test)."""
    if unshare and shutil.which("unshare") is None:
        pytest.skip("needs util-linux unshare to make a private mount namespace")
    command = [*unshare, sys.executable, "-c", DRIVER, json.dumps(steps)]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and not done.stdout.strip():
        pytest.skip(f"cannot make a private mount namespace here: {done.stderr.strip()[:200]}")
    results = json.loads(done.stdout.strip().splitlines()[-1])
    if results[0]["rc"] != 0:
        pytest.skip(f"cannot mount in a private namespace here: {results[0]['err'].strip()[:200]}")
    return results


def the_error_line(result: dict) -> str:
    """The one line a person reads: every other stderr line is a log line; no traceback."""
    assert not str(result["rc"]).startswith("crash"), result["rc"]
    lines = [line for line in result["err"].splitlines() if line.strip() and not LOG_LINE.match(line)]
    assert len(lines) == 1, result["err"]
    return lines[0]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    for seed in range(3):
        write_video(folder / f"v{seed}.mp4", [50], width=64, height=48, seed=seed)
    return folder


@pytest.fixture(scope="module")
def clean(videos, tmp_path_factory):
    """An unbroken run: the reference for what a rerun after the problem must give."""
    out = tmp_path_factory.mktemp("clean") / "out"
    assert main(["run", "-i", str(videos), "-o", str(out), *SETTINGS]) == 0
    return out


def _catalog(out: Path) -> tuple[list, list]:
    con = connect(out)
    return (con.execute("SELECT source_uri, status FROM videos ORDER BY 1").fetchall(),
            con.execute("SELECT clip_id, status, reason FROM clips ORDER BY 1").fetchall())


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_read_only_output_is_one_line_naming_the_path(videos, clean, tmp_path):
    root = os.geteuid() == 0
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    done = shelf / "done"  # an output that worked, on a mount that became read-only
    shutil.copytree(clean, done)
    before = _files(done)
    runs = [["vidprep", "run", "-i", str(videos), "-o", str(shelf / out), *SETTINGS]
            for out in ("new", "missing/out", "done")]
    if root:
        results = in_namespace([["sh", f"mount --bind {shelf} {shelf} && mount -o remount,ro,bind {shelf}"], *runs],
                               ["unshare", "-m"])[1:]
        cause = "read-only file system (EROFS)"
    else:
        shelf.chmod(0o555)
        done.chmod(0o555)
        try:
            results = in_namespace([["sh", "true"], *runs], [])[1:]
        finally:
            shelf.chmod(0o755)
            done.chmod(0o755)
        cause = "permission denied (EACCES)"
    named = [shelf / "new", shelf / "missing", done]  # the missing parent is what can't be made
    for result, path in zip(results, named):
        assert result["rc"] == EXIT_OUTPUT, result
        line = the_error_line(result)
        assert line.startswith(f"vidprep run: error: cannot write {path}") and cause in line, line
        assert "run the same command again" in line
    assert not (shelf / "new").exists() and not (shelf / "missing").exists()
    assert _files(done) == before  # the read-only output untouched


def test_full_disk_mid_run_is_one_line_and_a_rerun_after_freeing_space_equals_a_clean_run(videos, clean, tmp_path):
    disk, first, second = tmp_path / "disk", tmp_path / "after-failure", tmp_path / "after-rerun"
    disk.mkdir()
    # Room for the start and the first wave, not for all three (tmpfs counts whole pages).
    pages = sum(math.ceil(p.stat().st_size / 4096) for p in clean.rglob("*") if p.is_file())
    size = (pages * 2 // 3) * 4096
    run = ["vidprep", "run", "-i", str(videos), "-o", str(disk / "out"), *SETTINGS]
    results = in_namespace([["sh", f"mount -t tmpfs -o size={size} tmpfs {disk}"], run,
                            ["sh", f"cp -a {disk / 'out'} {first}"], ["sh", f"mount -o remount,size=64m {disk}"],
                            run, ["sh", f"cp -a {disk / 'out'} {second}"]],
                           ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"])
    failed, rerun = results[1], results[4]
    assert failed["rc"] == EXIT_OUTPUT, failed
    line = the_error_line(failed)
    assert re.match(rf"vidprep run: error: cannot write {re.escape(str(disk / 'out'))}\S*: no space left on device "
                    r"\(ENOSPC\)", line), line
    # Nothing half-committed: every record's files are whole and readable; no half-written record.
    records = list(CommitLog(first).records())
    assert 1 <= len(records) < 3, "the disk filled before the first wave or after the last: resize the tmpfs"
    assert not list((first / "_commits").glob("*.tmp"))
    videos_seen, clips_seen = _catalog(first)
    clean_videos, clean_clips = _catalog(clean)
    assert set(clips_seen) < set(clean_clips) and set(videos_seen) < set(clean_videos)
    assert rerun["rc"] == 0, rerun
    assert _catalog(second) == (clean_videos, clean_clips)  # resumed: nothing lost, nothing twice


def test_errors_that_are_not_the_outputs_are_not_translated(tmp_path):
    out = tmp_path / "out"
    unreadable_source = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "in" / "a.mp4"))
    assert output_problem(unreadable_source, out) is None  # a source's problem is its row, not the run's
    assert output_problem(ValueError("errno 28 in a caption"), out) is None
    inside = PermissionError(errno.EACCES, "Permission denied", str(out / "catalog" / "x.parquet"))
    assert "permission denied (EACCES)" in str(output_problem(_wrapped(inside), out))
    pyarrow_style = OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")
    assert "no space left on device (ENOSPC)" in str(output_problem(_wrapped(pyarrow_style), out))


def _wrapped(cause: BaseException) -> BaseException:
    """An error raised while handling `cause`, the way Ray and the stages re-raise."""
    try:
        try:
            raise cause
        except BaseException as err:
            raise RuntimeError("task failed") from err
    except RuntimeError as outer:
        return outer


def test_a_second_run_on_the_same_output_is_refused_while_the_first_holds_it(tmp_path, capsys):
    from pipeline.store.lease import OutputLock

    (tmp_path / "in").mkdir()
    assert main(["run", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *SETTINGS]) == 0
    with OutputLock(tmp_path / "out"):  # a first run still writing
        code = main(["run", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *SETTINGS])
    assert code == 2 and f"another vidprep run is writing to {tmp_path / 'out'}" in capsys.readouterr().err


def test_the_end_of_run_pass_and_compaction_run_under_the_runs_own_lock(tmp_path, monkeypatch):
    """Another writer (a `vidprep refilter` with other settings) that slipped in between a run's last
    commit and its end-of-run pass would make the pass re-decide every wave: the lock is held through."""
    import pipeline.catalog.refilter as refilter_module
    import pipeline.run.runner as runner_module
    from pipeline.store.lease import OutputLock

    refused: list[str] = []

    def another_writer_meanwhile(step):
        def wrapped(out, *args, **kwargs):
            try:
                with OutputLock(out):
                    refused.append(f"{step}: taken")
            except RuntimeError as err:
                refused.append(f"{step}: {err}")
            return step_function[step](out, *args, **kwargs)
        return wrapped

    step_function = {"pass": refilter_module.after_run, "compact": runner_module.compact_if_many}
    monkeypatch.setattr(refilter_module, "after_run", another_writer_meanwhile("pass"))
    monkeypatch.setattr(runner_module, "compact_if_many", another_writer_meanwhile("compact"))
    (tmp_path / "in").mkdir()
    write_video(tmp_path / "in" / "a.mp4", [40], width=64, height=48)
    assert main(["run", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *SETTINGS,
                 "--set", "run.compact_above_files=2"]) == 0
    expected = f"another vidprep run is writing to {tmp_path / 'out'}"
    assert refused == [f"pass: {expected}", f"compact: {expected}"]
    with OutputLock(tmp_path / "out"):  # released at the end
        pass


def test_a_full_disk_under_the_run_log_prints_no_logging_traceback(tmp_path, capsys):
    import logging

    from pipeline.run.console import run_logging

    with run_logging(tmp_path / "logs" / "run.log") as handler:
        def full(_text):
            raise OSError(errno.ENOSPC, "No space left on device")

        handler.stream.write = full
        logging.getLogger("vidprep").info("a line the disk can't take")
    assert "Logging error" not in capsys.readouterr().err
