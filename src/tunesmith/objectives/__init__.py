"""Training objectives: one small module per loss. `OBJECTIVES` maps the config name to its class."""

from tunesmith.objectives.dpo import DPOObjective
from tunesmith.objectives.grpo import GRPOObjective
from tunesmith.objectives.kto import KTOObjective
from tunesmith.objectives.orpo import ORPOObjective
from tunesmith.objectives.ppo import PPOObjective
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
    "ppo": PPOObjective,
    "grpo": GRPOObjective,
}


def build_objective(name: str, align=None, rl=None):
    """The configured objective; classes with `from_config` read the `align` section, `from_rl` the `rl` one."""
    cls = OBJECTIVES[name]
    if rl is not None and hasattr(cls, "from_rl"):
        return cls.from_rl(rl)
    return cls.from_config(align) if align is not None and hasattr(cls, "from_config") else cls()
