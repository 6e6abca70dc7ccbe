"""Evaluation: load token rows from files and measure the language-model loss / perplexity."""

from jaxprune.evaluation.data import eos_token_id, load_eval_rows
from jaxprune.evaluation.lm_loss import check_rows, evaluate_lm_loss, make_nll_fn

__all__ = ["check_rows", "eos_token_id", "evaluate_lm_loss", "load_eval_rows", "make_nll_fn"]
