"""Who owns a video's bytes: the same content under two names is processed once.

Ids are content-derived, so two copies of a file would produce the same
clip ids twice. The writer asks the registry before writing: the first source
to claim a video_id owns it; any other source with that id becomes a `videos`
row with status error and reason `duplicate_of:<owner>`, and its clip rows
are not written. Owners committed by earlier runs are loaded at start, so a
copy added later is caught too. Claims are idempotent per source (a retried
task gets the same answer). Within one run the first claim wins: with Ray
that is processing order, which follows listing order closely but not exactly.
"""
from __future__ import annotations


class VideoRegistry:
    def __init__(self, owners: dict[str, str] | None = None):
        self.owners = dict(owners or {})

    def claim(self, pairs: list[tuple[str, str]]) -> dict[str, str]:
        """{source_uri: owning source_uri} for each (video_id, source_uri) pair."""
        return {uri: self.owners.setdefault(video_id, uri) for video_id, uri in pairs}


class RayRegistry:
    """A VideoRegistry living in one Ray actor, callable like the local one from any task."""

    def __init__(self, owners: dict[str, str]):
        import ray

        self.actor = ray.remote(num_cpus=0)(VideoRegistry).remote(owners)

    def claim(self, pairs: list[tuple[str, str]]) -> dict[str, str]:
        import ray

        return ray.get(self.actor.claim.remote(pairs))


def committed_owners(out) -> dict[str, str]:
    """video_id → source_uri of the videos committed with status ok."""
    from pipeline.catalog.views import connect

    try:
        return dict(connect(out).execute("SELECT video_id, min(source_uri) FROM videos WHERE status = 'ok' "
                                         "GROUP BY video_id").fetchall())
    except FileNotFoundError:  # a new output
        return {}
