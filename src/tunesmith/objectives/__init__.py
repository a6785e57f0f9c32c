"""Training objectives: one small module per loss. `OBJECTIVES` maps the config name to its class."""

from tunesmith.objectives.sft import SFTObjective

OBJECTIVES = {"sft": SFTObjective}
