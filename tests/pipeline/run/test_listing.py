import os

from pipeline.run.listing import list_sources

EXTS = [".mp4", ".mov"]


def test_walks_recursively_in_a_stable_order(tmp_path):
    for name in ["b.mp4", "a.MOV", "notes.txt", "sub/c.mp4", "sub/deeper/d.mp4", "folder.mp4/inner.mp4"]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    found = [os.path.relpath(p, tmp_path) for p in list_sources(str(tmp_path), EXTS)]
    # a directory named like a video is a source (probe reports it), not a folder to enter
    assert found == ["a.MOV", "b.mp4", "folder.mp4", "sub/c.mp4", "sub/deeper/d.mp4"]
    assert [os.path.relpath(p, tmp_path) for p in list_sources(str(tmp_path), EXTS, recursive=False)] == [
        "a.MOV", "b.mp4", "folder.mp4"]


def test_symlink_loop_terminates(tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"x")
    (tmp_path / "loop").symlink_to(tmp_path)
    found = list(list_sources(str(tmp_path), EXTS, follow_symlinks=True))
    assert found.count(str(tmp_path / "v.mp4")) == 1


def test_uri_list_file(tmp_path):
    listing = tmp_path / "inputs.txt"
    listing.write_text("# comment\n/data/a.mp4\n\ns3://bucket/b.mp4\n/data/a.mp4\n")
    assert list(list_sources(str(listing), EXTS)) == ["/data/a.mp4", "s3://bucket/b.mp4"]
