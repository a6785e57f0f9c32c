"""Data cleaning: normalisation, exact and near-duplicate removal, quality rules, PII redaction,
harmful-content filtering and decontamination, run as a recipe of named stages by `clean_file`."""

from tunesmith.data.clean.decontaminate import Contamination
from tunesmith.data.clean.dedup import MinHasher, NearDupIndex, exact_key, shingles
from tunesmith.data.clean.fields import Item, Slot, iter_items, row_format, row_hash
from tunesmith.data.clean.normalize import normalize_text
from tunesmith.data.clean.pii import find_pii, redact
from tunesmith.data.clean.pipeline import Recipe, clean_file, load_recipe, parse_recipe
from tunesmith.data.clean.quality import check_exchange, detect_language, is_refusal, is_truncated

__all__ = [
    "Contamination", "Item", "MinHasher", "NearDupIndex", "Recipe", "Slot", "check_exchange", "clean_file",
    "detect_language", "exact_key", "find_pii", "is_refusal", "is_truncated", "iter_items", "load_recipe",
    "normalize_text", "parse_recipe", "redact", "row_format", "row_hash", "shingles",
]
