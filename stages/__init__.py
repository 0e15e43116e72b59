"""Pipeline stages, one class per file. STAGES fixes their order in the plan."""
from stages.base import Resources, Stage
from stages.probe import Probe
from stages.split import Split
from stages.encode import Encode

# Plan order (DESIGN.md): a stage named in the config's `stages:` runs, in this order.
STAGES: dict[str, type[Stage]] = {
    "probe": Probe,
    "split": Split,
    "encode": Encode,  # last: it embeds the captions written before it
}
REQUIRED_STAGES = ("probe", "split")

__all__ = ["STAGES", "REQUIRED_STAGES", "Resources", "Stage", "Probe", "Split", "Encode"]
