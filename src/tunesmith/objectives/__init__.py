"""Training objectives: one small module per loss. `OBJECTIVES` maps the config name to its class."""

from tunesmith.objectives.dpo import DPOObjective
from tunesmith.objectives.kto import KTOObjective
from tunesmith.objectives.orpo import ORPOObjective
from tunesmith.objectives.rm import RewardModelObjective
from tunesmith.objectives.sft import SFTObjective
from tunesmith.objectives.simpo import SimPOObjective

OBJECTIVES = {
    "sft": SFTObjective,
    "rm": RewardModelObjective,
    "dpo": DPOObjective,
    "simpo": SimPOObjective,
    "orpo": ORPOObjective,
    "kto": KTOObjective,
}


def build_objective(name: str, align=None):
    """The configured objective; classes with `from_config` read their settings from the `align` section."""
    cls = OBJECTIVES[name]
    return cls.from_config(align) if align is not None and hasattr(cls, "from_config") else cls()
