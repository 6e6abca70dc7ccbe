"""lm-evaluation-harness model ``jaxprune``, backed by the jitted forward and generation.

Needs the optional ``lm-eval`` package (``pip install "jaxprune[eval]"``). Importing this
module registers the model with ``lm_eval.api.registry`` (lm-eval 0.4 discovers models
through its registry only, not through entry points), so either

* ``python -m jaxprune.lm_eval_adapter run --model jaxprune --model_args path=CKPT
  --batch_size 8 --tasks hellaswag`` (lm-eval's own command line, run after the
  registration; give the batch size with ``--batch_size``, not in ``model_args``), or
* ``import jaxprune.lm_eval_adapter`` then ``lm_eval.simple_evaluate(model="jaxprune",
  model_args="path=CKPT", tasks=[...])``, or
* :func:`run_tasks` (what ``jaxprune eval MODEL --tasks t1,t2`` calls).

``model_args``: ``path`` (native checkpoint, HF directory or preset name), ``tokenizer``
(default: the model directory's ``tokenizer.json``), ``max_length``
(2048 tokens of context), ``max_gen_toks`` (256), ``bucket`` (64: padded lengths are
multiples of it, so few shapes compile), ``seed``.

Offline tasks: put a task YAML in a directory and pass it as ``include_path``. Its data can
be a local file, ``dataset_path: json`` with ``dataset_kwargs: {data_files: {test:
/abs/path/data.jsonl}}`` (relative paths are resolved against the working directory), or,
independent of the working directory, ``custom_dataset: !function utils.load`` with a
``utils.py`` beside the YAML that builds a ``datasets.DatasetDict`` from files next to it
(see ``tests/data_files/lm_eval_tiny``). Set ``HF_DATASETS_OFFLINE=1`` and
``HF_HUB_OFFLINE=1`` so that nothing is fetched.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

try:
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        'jaxprune.lm_eval_adapter needs lm-eval: pip install "jaxprune[eval]" (or lm-eval)'
    ) from e

from jaxprune.inference.scoring import score_batches
from jaxprune.inference.stream import Decoder, generate_text
from jaxprune.models import resolve_model
from jaxprune.tokenizer import as_tokenizer


@register_model("jaxprune")
class JaxpruneLM(TemplateLM):
    """A jaxprune model as an lm-eval ``LM``: ``loglikelihood``, ``loglikelihood_rolling``
    and ``generate_until``, batched. Pass ``path`` or an in-memory ``model`` + ``tokenizer``
    (a :class:`jaxprune.tokenizer.Tokenizer` or a bare ``tokenizers.Tokenizer``, whose EOS
    is then guessed). ``self.tokenizer`` is the ``tokenizers.Tokenizer``; ``self.tok`` the
    wrapper with the special ids."""

    def __init__(
        self,
        path: str | None = None,
        *,
        model=None,
        tokenizer=None,
        batch_size: int | str | None = 8,
        max_length: int = 2048,
        max_gen_toks: int = 256,
        bucket: int = 64,
        seed: int = 0,
        **unused,
    ):
        super().__init__()
        if model is None:
            if path is None:
                raise ValueError("jaxprune lm-eval model: pass path=... (or model=)")
            tok_path = tokenizer if isinstance(tokenizer, str) else None
            loaded = resolve_model(str(path), tokenizer=tok_path, seed=int(seed))
            model = loaded.model
            if tokenizer is None or tok_path is not None:
                tokenizer = loaded.tokenizer
        if tokenizer is None:
            raise ValueError("jaxprune lm-eval model: no tokenizer (pass tokenizer=PATH)")
        self.tok = as_tokenizer(tokenizer)
        self.model, self.tokenizer = model, self.tok.raw
        bs = str(batch_size or 8).split(":")[0]
        self.batch_size = int(bs) if bs.isdigit() else 8
        self.max_length, self.max_gen_toks = int(max_length), int(max_gen_toks)
        self.bucket, self.seed = int(bucket), int(seed)
        self._eot = self.tok.eos_id
        self._decoders: dict[tuple, Decoder] = {}

    @property
    def eot_token_id(self) -> int:
        return 0 if self._eot is None else self._eot

    @property
    def tokenizer_name(self) -> str:
        return "jaxprune-tokenizer"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kw) -> list[int]:
        return self.tok.encode(string, add_special_tokens=bool(add_special_tokens))

    def tok_decode(self, tokens: Sequence[int]) -> str:
        return self.tok.decode(tokens)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kw):
        """requests: ((context, continuation) | None, context ids, continuation ids) ->
        [(sum of the continuation's log-probabilities, whether it is the greedy one)]."""
        rows = []
        for _, ctx, cont in requests:
            whole = (list(ctx) + list(cont))[-(self.max_length + 1) :]
            rows.append((whole, min(len(cont), len(whole) - 1)))
        out = score_batches(self.model, rows, batch_size=self.batch_size, bucket=self.bucket)
        for (key, _, _), res in zip(requests, out):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, res)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Total log-probability of each text, in disjoint windows of ``max_length``."""
        windows, owner = [], []
        for i, req in enumerate(requests):
            ids = self.tok_encode(req.args[0])
            for w in get_rolling_token_windows(
                token_list=ids,
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            ):
                windows.append((None, *make_disjoint_window(w)))
                owner.append(i)
        scores = self._loglikelihood_tokens(windows) if windows else []
        totals = np.zeros(len(requests))
        np.add.at(totals, owner, [s for s, _ in scores])
        out = totals.tolist()
        for req, total in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood_rolling", (req.args[0],), total)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy or sampled continuations, batched per distinct ``gen_kwargs``."""
        out: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        for idx in groups.values():
            kw = dict(requests[idx[0]].args[1])
            until = kw.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            n = int(kw.pop("max_gen_toks", self.max_gen_toks))
            decoder = self._decoder(kw)
            for s in range(0, len(idx), self.batch_size):
                part = idx[s : s + self.batch_size]
                texts = generate_text(
                    decoder,
                    self.tok,
                    [requests[i].args[0] for i in part],
                    n,
                    eos_id=self._eot,
                    stop=until,
                    multiple=self.bucket,
                    max_prompt_len=max(self.max_length - n, 1),
                )
                for i, text in zip(part, texts):
                    out[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return out

    def _decoder(self, kw: dict) -> Decoder:
        """One decoder (compiled once) per sampling rule."""
        sampled = bool(kw.get("do_sample", False)) and float(kw.get("temperature", 1.0)) > 0
        rule = (
            (float(kw.get("temperature", 1.0)), kw.get("top_k"), kw.get("top_p"))
            if sampled
            else (0.0, None, None)
        )
        if rule not in self._decoders:
            t, k, p = rule
            self._decoders[rule] = Decoder(
                self.model,
                temperature=t,
                top_k=None if k is None else int(k),
                top_p=None if p is None else float(p),
            )
        return self._decoders[rule]


def run_tasks(
    model_path: str,
    tasks: str | Sequence[str],
    *,
    include_path: str | None = None,
    limit: int | float | None = None,
    batch_size: int = 8,
    num_fewshot: int | None = None,
    max_length: int = 2048,
    seed: int = 0,
) -> dict:
    """Run lm-eval ``tasks`` (names or "t1,t2") on a model; return JSON-ready
    ``{"results": {task: {metric: value}}, "n-shot": ..., "versions": ...}``.

    ``include_path``: a directory of extra task YAMLs (e.g. local, offline tasks).
    """
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    if not names or not all(names):
        raise ValueError(f"eval: no task names in {tasks!r}")
    manager = TaskManager(include_path=include_path)
    missing = [t for t in names if t not in manager.all_tasks]
    if missing:
        raise ValueError(f"eval: unknown lm-eval task(s): {', '.join(missing)}")
    lm = JaxpruneLM(str(model_path), batch_size=batch_size, max_length=max_length, seed=seed)
    out = simple_evaluate(
        model=lm,
        tasks=names,
        num_fewshot=num_fewshot,
        limit=limit,
        task_manager=manager,
        log_samples=False,
        random_seed=seed,
    )
    keep = {k: out.get(k) for k in ("results", "n-shot", "versions", "higher_is_better")}
    return json.loads(json.dumps(keep, default=str))


if __name__ == "__main__":
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()
