"""The published full-scale recipes build, and their parameter counts match the papers."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from jaxprune.cli.gin import config_from_gin
from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig
from jaxprune.converters.families import family_module
from jaxprune.counts import count_params
from jaxprune.pipeline import CompressConfig
from jaxprune.pruning.materialize import shrink_config
from jaxprune.pruning.prune import plan
from jaxprune.pruning.targets import KIND_COUNTS

RECIPES = sorted((Path(__file__).parent.parent / "experiments/configs/recipes").glob("*_to_*.gin"))


def _flat_scores(cfg) -> dict:
    """Equal importance everywhere: only the sizes of a plan matter for parameter counts."""
    s = {"hidden": np.ones(cfg.hidden), "depth_block_influence": np.ones(len(cfg.layers))}
    for i, layer in enumerate(cfg.layers):
        if isinstance(layer, MLPConfig):
            s[f"blocks.{i}.mlp"] = np.ones(layer.intermediate)
        elif isinstance(layer, AttentionConfig):
            s[f"blocks.{i}.heads"] = np.ones(layer.num_heads)
        elif isinstance(layer, Mamba2Config):
            s[f"blocks.{i}.mamba"] = np.ones((layer.num_heads, layer.head_dim))
    return s


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_builds_and_matches_published_sizes(recipe):
    import gin

    cfg = config_from_gin([str(recipe)], ['MODEL = "m"', 'DATA = "d"', 'OUT = "o"'], CompressConfig)
    assert cfg.targets and cfg.distill.seq_len == 8192 and cfg.calibration.samples == 1024
    arch = json.loads((recipe.parent / "arch" / gin.query_parameter("%ARCH")).read_text())
    source = family_module(arch["model_type"]).config_from_hf(arch)
    student = shrink_config(source, plan(source, _flat_scores(source), cfg.targets))
    want_src, want_dst = gin.query_parameter("%PUBLISHED_PARAMS")
    got_src, got_dst = count_params(source)["total"], count_params(student)["total"]
    tol = gin.query_parameter("%PARAMS_TOLERANCE")
    assert got_src == pytest.approx(want_src, rel=tol), got_src
    assert got_dst == pytest.approx(want_dst, rel=tol), got_dst
    for key, value in cfg.targets.items():  # the student has exactly the published dims
        if key == "hidden_size":
            assert student.hidden == value
        elif key == "num_hidden_layers":  # HF layers: blocks, or (*, -) pairs for Llama
            assert len(student.layers) in (value, 2 * value)
        elif key in KIND_COUNTS:  # MiniPuzzle: blocks kept per kind
            assert sum(x.kind == KIND_COUNTS[key] for x in student.layers) == value
        else:
            attr = {
                "intermediate_size": (MLPConfig, "intermediate"),
                "mamba_num_heads": (Mamba2Config, "num_heads"),
            }[key]
            assert {getattr(x, attr[1]) for x in student.layers if isinstance(x, attr[0])} == {
                value
            }


def test_every_recipe_is_tested():
    assert len(RECIPES) == 6


@pytest.mark.parametrize("hosts", [1, 2, 4, 8])
def test_pod_distill_recipe_is_the_published_distillation_on_a_pod_mesh(hosts):
    """distill_pod.gin = common.gin's distill/ settings, unscoped, plus the (-1, 4, 2) mesh;
    with grad_accum = 96 / hosts its micro-batch divides by the pod's data x fsdp shards."""
    from jaxprune.cli.gin import train_config_from_gin

    root = Path(__file__).parent.parent / "experiments/configs/recipes"
    published = config_from_gin(
        [str(root / "nemotron_h_8b_to_4b.gin")],
        ['MODEL = "m"', 'DATA = "d"', 'OUT = "o"'],
        CompressConfig,
    ).distill
    pod = train_config_from_gin(
        [str(root / "distill_pod.gin")], [f"TrainConfig.grad_accum = {96 // hosts}"]
    )
    assert pod.mesh == (-1, 4, 2) and published.mesh == (-1, 1, 1)
    assert dataclasses.replace(pod, mesh=published.mesh, grad_accum=96) == published
    data, fsdp = hosts * 8 // (4 * 2), 4  # -1 = the rest of hosts x 8 GPUs
    micro = pod.batch_size // pod.grad_accum
    assert micro % (data * fsdp) == 0 and pod.batch_size % (hosts * pod.grad_accum) == 0


def test_the_puzzle_recipe_builds_and_its_budgets_are_reachable():
    import gin

    from jaxprune.puzzle.full import check_budget
    from jaxprune.puzzle.library import build_library, shared_costs
    from jaxprune.puzzle.mip import solve

    recipe = RECIPES[0].parent / "puzzle_nemotron_h_8b.gin"
    cfg = config_from_gin([str(recipe)], ['MODEL = "m"', 'DATA = "d"', 'OUT = "o"'], CompressConfig)
    pz = cfg.puzzle
    assert pz is not None and not cfg.targets and cfg.search is None and cfg.export_per_layer_mlp
    arch = json.loads((recipe.parent / "arch" / gin.query_parameter("%ARCH")).read_text())
    source = family_module(arch["model_type"]).config_from_hf(arch)
    lim = check_budget(source, pz)  # neither admits the parent nor is below the embeddings
    library = build_library(source, _flat_scores(source), pz.library())
    shared = shared_costs(source, pz.library())
    costs = {k: [np.array([getattr(v, k) for v in row], float) for row in library]
             for k in ("params", "memory")}  # fmt: skip
    # prefer keeping parameters: the best choice under the budgets is close to them
    scores = [-c for c in costs["params"]]
    (best,) = solve(scores, costs, {k: v - shared[k] for k, v in lim.items()}, gap=pz.mip_gap,
                    time_limit=60)  # fmt: skip
    assert best.costs["params"] + shared["params"] <= lim["params"]
    assert best.costs["params"] + shared["params"] >= 0.97 * lim["params"]
    assert best.costs["memory"] + shared["memory"] <= lim["memory"]
