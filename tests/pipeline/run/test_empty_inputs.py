"""Inputs with nothing usable: nothing listed is exit 0 and one line; nothing decodable is error rows,
no end-of-run pass, a summary that says why, and exit 4 (issue 21)."""
from __future__ import annotations

from pipeline.catalog.views import connect
from pipeline.cli import EXIT_NO_CLIPS, main
from pipeline.kit.synth import write_video

# A filter whose keep names a score column: the end-of-run pass used to fail on it when no clip existed
# ("keep: unknown column 'clip_black'"). No model stage is needed to reach that pass.
FILTER = "stages.filter={keep: 'clip_black < 0.5', near_duplicate_distance: null}"
SEQUENTIAL = ["--runner", "sequential", "--no-progress", "--set", "stages.split.decode_short_side=64"]


def _vidprep(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["run", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_empty_folder_is_one_line_naming_the_input_and_extensions(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    code, out, err = _vidprep(capsys, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *SEQUENTIAL,
                              "--set", FILTER)
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1 and "no source found in" in lines[0] and str(tmp_path / "in") in lines[0]
    assert "*.mp4" in lines[0] and "*.mkv" in lines[0]  # the configured extensions, as looked for
    assert "error" not in err


def test_only_unlisted_extensions_names_what_was_looked_for(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    write_video(tmp_path / "in" / "clip.mkv", [30], width=64, height=48)  # a real video, not listed
    (tmp_path / "in" / "notes.txt").write_text("not a video")
    code, out, _ = _vidprep(capsys, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *SEQUENTIAL,
                            "--set", "input.extensions=[.mp4, .webm]")
    assert code == 0
    assert out.strip().splitlines() == [
        f"vidprep run: no source found in {tmp_path / 'in'} or its subfolders: no file named *.mp4, *.webm "
        "(input.extensions); nothing to do"]


def _broken_folder(folder):
    folder.mkdir()
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "noise.mp4").write_bytes(bytes(range(256)) * 40)
    (folder / "noise2.mp4").write_bytes(bytes(range(255, -1, -1)) * 40)
    return folder


def test_only_broken_files_commit_their_errors_and_say_no_clip_was_produced(tmp_path, capsys):
    source = _broken_folder(tmp_path / "in")
    code, out, err = _vidprep(capsys, "-i", str(source), "-o", str(tmp_path / "out"), *SEQUENTIAL, "--set", FILTER)
    assert code == EXIT_NO_CLIPS, err
    assert "vidprep run: error" not in err  # the end-of-run pass is skipped, not failed
    assert "error: invalid_container" in out and "error: empty_file" in out
    assert "no clip was produced: all 3 videos processed had errors (invalid_container 2, empty_file 1)" in out
    con = connect(tmp_path / "out")
    assert con.execute("SELECT count(*), count(*) FILTER (status = 'error') FROM videos").fetchone() == (3, 3)
    assert con.execute("SELECT count(*) FROM clips").fetchone() == (0,)
    assert not (tmp_path / "out" / "_status").exists()  # no overlay written over nothing


def test_a_rerun_with_nothing_new_is_not_a_failure(tmp_path, capsys):
    """Everything already committed: nothing processed, so not 'no clip produced' (exit 0)."""
    source = _broken_folder(tmp_path / "in")
    argv = ["-i", str(source), "-o", str(tmp_path / "out"), *SEQUENTIAL, "--set", FILTER]
    assert _vidprep(capsys, *argv)[0] == EXIT_NO_CLIPS
    code, out, _ = _vidprep(capsys, *argv)
    assert code == 0 and "videos skipped (already committed)  3" in out
