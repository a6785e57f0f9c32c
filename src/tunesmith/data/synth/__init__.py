"""Synthetic data: self-instruct, evol-instruct, constitutional critique/revision and RLAIF judging.

Every method takes a `Backend` (a local model or an OpenAI-compatible endpoint, see backends.py), writes
JSONL that a rerun resumes (resumable.py), and returns a `SynthReport` with its counts.
"""

from tunesmith.data.synth.backends import EndpointBackend, LocalBackend, make_backend
from tunesmith.data.synth.constitutional import constitutional, load_principles
from tunesmith.data.synth.evol_instruct import evol_instruct
from tunesmith.data.synth.pipeline import SynthReport
from tunesmith.data.synth.rlaif import rlaif
from tunesmith.data.synth.self_instruct import self_instruct

__all__ = ["EndpointBackend", "LocalBackend", "SynthReport", "constitutional", "evol_instruct", "load_principles",
           "make_backend", "rlaif", "self_instruct"]
