"""tunesmith: fine-tune, align, evaluate and serve causal language models."""

__version__ = "0.1.0"
