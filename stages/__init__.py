"""Pipeline stages, one class per file. STAGES fixes their order in the plan."""
from stages.base import Resources, Stage
from stages.probe import Probe
from stages.split import Split
from stages.signals import Signals
from stages.nsfw import Nsfw
from stages.clip_score import ClipScore
from stages.filter import Filter
from stages.caption import Caption
from stages.expand import Expand
from stages.encode import Encode

# Plan order (DESIGN.md): a stage named in the config's `stages:` runs, in this order.
STAGES: dict[str, type[Stage]] = {
    "probe": Probe,
    "split": Split,
    "signals": Signals,  # CPU: pixel statistics, optical-flow motion, text on screen
    "nsfw": Nsfw,  # opt-in, CPU: NudeNet's unsafe-content score
    "clip_score": ClipScore,  # GPU actor: embeddings and scores of accepted clips
    "filter": Filter,  # keep expression over the scores; near-duplicates after the commits
    "caption": Caption,  # after clip_score/filter: only kept clips are captioned
    "expand": Expand,
    "encode": Encode,  # last: it embeds the captions written before it
}
REQUIRED_STAGES = ("probe", "split")

__all__ = ["STAGES", "REQUIRED_STAGES", "Resources", "Stage", "Probe", "Split", "Signals", "Nsfw", "ClipScore", "Filter", "Caption",
           "Expand", "Encode"]
