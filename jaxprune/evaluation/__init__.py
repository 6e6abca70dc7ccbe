"""Evaluation: the language-model loss / perplexity of token rows.

Rows come from :func:`jaxprune.data.load_rows` (the one reader of data files; see
:mod:`jaxprune.data.sources` for the rule); :func:`check_rows` is the vocabulary check.
"""

from jaxprune.data.rows import check_rows
from jaxprune.evaluation.lm_loss import evaluate_lm_loss, make_nll_fn

__all__ = ["check_rows", "evaluate_lm_loss", "make_nll_fn"]
