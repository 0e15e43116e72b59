"""Private helper: which video stream of a container is "the video" (probe chooses, every stage decodes it).

A file can hold several video streams: cover art (MP4 `attached_pic`), a still
poster muxed as a one-frame stream before the real video (MKV), a low-resolution
proxy beside the master. The rule, FFmpeg's `av_find_best_stream` (the one decord
uses) extended by the CLI's preference for size:

1. skip cover art and thumbnails (disposition `attached_pic`, `still_image`,
   `timed_thumbnails`);
2. prefer a moving stream: min(5, packets) over the first packets of the file,
   as FFmpeg counts frames while probing. This comes before the `default`
   disposition because the MP4 muxer marks the FIRST track default, a
   one-frame still included;
3. then the `default` disposition;
4. then the largest width × height × packets seen (resolution × frame rate);
5. then the lowest index.

Only files with more than one candidate are scanned (one demux pass over at most
`SCAN_PACKETS` packets, no decoding); a single-stream file costs nothing.
"""
from __future__ import annotations

SCAN_PACKETS = 2000
_NOT_VIDEO = ("attached_pic", "still_image", "timed_thumbnails")


def candidates(container) -> list:
    """The container's video streams that can be the video (no cover art, no thumbnails)."""
    import av

    skip = 0
    for name in _NOT_VIDEO:
        skip |= int(getattr(av.stream.Disposition, name, 0))
    return [s for s in container.streams.video if not int(s.disposition) & skip]


def choose(path: str, container) -> int | None:
    """Index (among all streams) of the video stream to decode, or None when there is none."""
    import av

    found = candidates(container)
    if len(found) <= 1:
        return found[0].index if found else None
    packets = _packets_per_stream(path, {s.index for s in found})
    default = int(av.stream.Disposition.default)

    def rank(stream) -> tuple:
        seen = packets.get(stream.index, 0)
        return (min(5, seen), bool(int(stream.disposition) & default),
                (stream.width or 0) * (stream.height or 0) * seen, -stream.index)

    return max(found, key=rank).index


def is_only_video(path: str, index: int | None) -> bool:
    """True when `index` is the file's one candidate video stream: the stream decord opens by itself."""
    import av

    if index is None:
        return True
    try:
        with av.open(path) as container:
            return [s.index for s in candidates(container)] == [index]
    except av.FFmpegError:
        return True  # let decord try, and the PyAV fallback report the error


def _packets_per_stream(path: str, indices: set[int]) -> dict[int, int]:
    """Packets of each stream among the first SCAN_PACKETS of the file (a separate open: no seek back)."""
    import av

    counts = {i: 0 for i in indices}
    with av.open(path) as container:
        streams = [s for s in container.streams if s.index in indices]
        try:
            for n, packet in enumerate(container.demux(streams)):
                if packet.size:  # the demuxer's final flush packets are empty
                    counts[packet.stream.index] += 1
                if n >= SCAN_PACKETS:
                    break
        except av.FFmpegError:
            pass  # damaged past here: rank by what was read
    return counts


def packet_times(path: str) -> "np.ndarray | None":
    """Presentation times (s) of the packets of the file's one candidate video stream (the stream decord
    opens), sorted: FFmpeg's frame times, one per frame, for containers with an index (demuxing only, no
    decoding); None if any is unknown."""
    import av
    import numpy as np

    try:
        with av.open(path) as container:
            found = candidates(container)
            if not found:
                return None
            stream = found[0]
            pts = [p.pts for p in container.demux(stream) if p.size]
            base = stream.time_base
    except av.FFmpegError:
        return None
    if not pts or any(p is None for p in pts):
        return None
    return np.sort(np.asarray(pts, np.float64)) * float(base)
