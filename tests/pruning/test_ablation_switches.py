"""The ablation switches: random rankings keep the group structure and follow the seed;
group-unaware Mamba pruning really moves heads into other B/C groups, and its masked
forward still equals its materialized model; the CLI flags work and refuse bad values."""

import jax
import numpy as np
import pytest

from jaxprune.cli import EXIT_USAGE, main
from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, MoEConfig
from jaxprune.converters.native import load_native, save_native
from jaxprune.errors import UserError
from jaxprune.nn.model import init_model
from jaxprune.nn.state import model_params
from jaxprune.pipeline import CompressConfig
from jaxprune.pruning.masks import mask_from_keep, masked_forward
from jaxprune.pruning.materialize import materialize
from jaxprune.pruning.prune import plan, prune
from jaxprune.pruning.ranking import ORDER, random_scores
from jaxprune.pruning.scoring import ScoreConfig, Scores, with_ranking
from jaxprune.testing.configs import PRUNING_CFG, compress_config

TARGETS = {
    "hidden_size": 16,
    "intermediate_size": 11,
    "num_attention_heads": 2,
    "mamba_num_heads": 3,
    "mamba_head_dim": 3,
    "n_routed_experts": 4,
    "moe_intermediate_size": 5,
    "moe_shared_expert_intermediate_size": 4,
    "num_hidden_layers": 6,
}


def _importance_like(cfg) -> dict:
    """Scores of every group of ``cfg`` (shapes as ``importance.scores`` returns them),
    decreasing with the index so that importance ranking keeps the first units."""
    rng = np.random.default_rng(0)

    def dec(*shape):
        return np.sort(rng.random(shape).ravel())[::-1].reshape(shape) + 1.0

    out = {"hidden": dec(cfg.hidden), "depth_block_influence": dec(len(cfg.layers))}
    for i, layer in enumerate(cfg.layers):
        b = f"blocks.{i}."
        if isinstance(layer, MLPConfig):
            out[b + "mlp"] = dec(layer.intermediate)
        elif isinstance(layer, AttentionConfig):
            out[b + "heads"] = dec(layer.num_heads)
        elif isinstance(layer, Mamba2Config):
            out[b + "mamba"] = dec(layer.num_heads, layer.head_dim)
        elif isinstance(layer, MoEConfig):
            out[b + "experts"] = dec(layer.num_experts)
            out[b + "expert_mlp"] = dec(layer.intermediate)
            out[b + "shared_mlp"] = dec(layer.shared_intermediate)
            out[b + "router_count"] = np.arange(layer.num_experts, dtype=float)
    return out


SCORES = _importance_like(PRUNING_CFG)


@pytest.fixture(scope="module")
def pruning_model():
    return init_model(PRUNING_CFG, 0)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_random_scores_replace_every_ranking_and_nothing_else():
    r = random_scores(SCORES, 3)
    assert r.keys() == SCORES.keys()
    for k in SCORES:
        assert r[k].shape == SCORES[k].shape
        if k.endswith("router_count"):
            np.testing.assert_array_equal(r[k], SCORES[k])
        else:
            assert not np.array_equal(r[k], SCORES[k]), k


@pytest.mark.parametrize("seed", range(4))
def test_random_ranking_respects_the_groups(seed, pruning_model):
    kept = plan(PRUNING_CFG, random_scores(SCORES, seed), TARGETS)
    for i in (0, 4):  # Mamba: 6 heads in 3 groups of 2, one kept per group; 3 channels
        assert np.bincount(kept[f"blocks.{i}.mamba_heads"] // 2, minlength=3).tolist() == [1] * 3
        assert len(kept[f"blocks.{i}.mamba_channels"]) == 3
        assert f"blocks.{i}.{ORDER}" not in kept
    for i in (2, 6):  # attention: 6 query heads in 2 KV groups of 3, one kept per group
        assert np.bincount(kept[f"blocks.{i}.heads"] // 3, minlength=2).tolist() == [1, 1]
    for i in (3, 7):  # experts: 8 in 4 routing groups of 2
        assert np.bincount(kept[f"blocks.{i}.experts"] // 2, minlength=4).tolist() == [1] * 4
    assert len(kept["hidden"]) == 16 and len(kept["depth"]) == 6
    small = materialize(pruning_model, kept)  # the group checks pass
    mamba = [x for x in small.config.layers if isinstance(x, Mamba2Config)]
    assert {x.num_heads for x in mamba} == {3} and small.config.hidden == 16


@pytest.mark.parametrize("seed", range(3))
def test_random_kv_group_pruning_keeps_heads_of_the_kept_groups(seed):
    kept = plan(
        PRUNING_CFG,
        random_scores(SCORES, seed),
        {"num_key_value_heads": 1, "num_attention_heads": 2},
    )
    for i in (2, 6):
        assert len(kept[f"blocks.{i}.kv_heads"]) == 1
        assert set(kept[f"blocks.{i}.heads"] // 3) == set(kept[f"blocks.{i}.kv_heads"].tolist())


def test_random_ranking_follows_the_seed_and_differs_from_importance():
    by_seed = {s: plan(PRUNING_CFG, random_scores(SCORES, s), TARGETS) for s in (3, 4)}
    assert _same(by_seed[3], plan(PRUNING_CFG, random_scores(SCORES, 3), TARGETS))
    assert not _same(by_seed[3], by_seed[4])
    importance = plan(PRUNING_CFG, SCORES, TARGETS)
    assert not _same(by_seed[3], importance)
    assert importance["hidden"].tolist() == list(range(16))  # the decreasing scores' top
    depths = {
        tuple(plan(PRUNING_CFG, random_scores(SCORES, s), TARGETS)["depth"]) for s in range(6)
    }
    assert len(depths) > 1  # the depth ranking is random too


def test_importance_is_the_default_and_with_ranking_is_idempotent():
    cfg = ScoreConfig()
    assert (cfg.ranking, cfg.seed, cfg.mamba_grouping) == ("importance", 0, "aware")
    sc = Scores(SCORES, {}, {"model": "m"})
    assert with_ranking(sc, cfg) is sc
    explicit = plan(PRUNING_CFG, SCORES, TARGETS, "depth_block_influence", "aware")
    assert _same(plan(PRUNING_CFG, SCORES, TARGETS), explicit)
    rnd = ScoreConfig(ranking="random", seed=7)
    once = with_ranking(sc, rnd)
    assert once.meta == {"model": "m", "ranking": "random", "seed": 7}
    assert _same(with_ranking(once, rnd).scores, once.scores)


@pytest.mark.parametrize(
    "kw, says",
    [
        ({"ranking": "rand"}, "ranking 'rand'; choose from importance, random"),
        ({"mamba_grouping": "global"}, "choose from aware, unaware"),
        ({"seed": -1}, "seed must be an integer >= 0"),
    ],
)
def test_bad_switch_values_are_user_errors(kw, says):
    with pytest.raises(UserError, match=says):
        ScoreConfig(**kw)
    if "mamba_grouping" in kw:
        with pytest.raises(UserError, match=says):
            plan(PRUNING_CFG, SCORES, TARGETS, mamba_grouping=kw["mamba_grouping"])


# compress_config: one Mamba block (index 0) with 4 heads in 2 groups of 2; keeping 2 heads.
CC = compress_config()
UNEVEN = np.array([9.0, 8.0, 1.0, 0.5])[:, None] * np.ones((1, 8))  # top 2 both in group 0
TOKENS = jax.random.randint(jax.random.key(1), (2, 9), 0, 50)


def _cc_scores(heads: np.ndarray) -> dict:
    return {**_importance_like(CC), "blocks.0.mamba": heads}


def test_unaware_grouping_moves_kept_heads_into_another_group():
    sc, t = _cc_scores(UNEVEN), {"mamba_num_heads": 2}
    aware = plan(CC, sc, t)
    unaware = plan(CC, sc, t, mamba_grouping="unaware")
    assert aware["blocks.0.mamba_heads"].tolist() == [0, 2]  # one per group
    order, slots = unaware["blocks.0." + ORDER], unaware["blocks.0.mamba_heads"]
    sources = order[slots]
    assert sources.tolist() == [0, 1]  # the global top 2, in index order
    assert set(sources) != set(aware["blocks.0.mamba_heads"])
    new_group, old_group = slots // 2, sources // 2
    assert np.bincount(new_group, minlength=2).tolist() == [1, 1]  # equal groups again
    assert (new_group != old_group).any()  # head 1 now reads group 1's B/C


def test_unaware_grouping_with_an_even_top_k_is_the_aware_one():
    even = np.array([9.0, 1.0, 8.0, 0.5])[:, None] * np.ones((1, 8))
    sc, t = _cc_scores(even), {"mamba_num_heads": 2}
    assert _same(plan(CC, sc, t, mamba_grouping="unaware"), plan(CC, sc, t))


@pytest.fixture(scope="module")
def cc_model():
    return init_model(CC, 0)


def test_unaware_masked_forward_equals_materialized(cc_model):
    kept = plan(CC, _cc_scores(UNEVEN), {"mamba_num_heads": 2}, mamba_grouping="unaware")
    small = materialize(cc_model, kept)
    x = model_params(cc_model)["blocks.0.mixer.x_proj"]
    np.testing.assert_array_equal(model_params(small)["blocks.0.mixer.x_proj"], x[:, [0, 1]])
    direct = np.asarray(jax.jit(lambda m, t: m(t))(small, TOKENS))
    fwd = jax.jit(masked_forward)
    masked = np.asarray(fwd(cc_model, mask_from_keep(cc_model, kept), TOKENS))
    np.testing.assert_allclose(masked, direct, atol=1e-4, rtol=1e-4)
    # without the head order the same heads would read their own groups' B/C: different
    own = {k: v for k, v in kept.items() if not k.endswith(ORDER)}
    own["blocks.0.mamba_heads"] = np.array([0, 1])
    with pytest.raises(UserError, match="equal in each of the 2 groups"):
        materialize(cc_model, own)
    ignored = np.asarray(fwd(cc_model, mask_from_keep(cc_model, own), TOKENS))
    assert np.abs(ignored - direct).max() > 1e-3


def test_compress_config_carries_the_switches():
    calib = ScoreConfig(ranking="random", seed=2, mamba_grouping="unaware")
    cfg = CompressConfig(model="m", data="d", out="o", targets={"hidden_size": 8},
                         calibration=calib)  # fmt: skip
    assert cfg.calibration.mamba_grouping == "unaware" and cfg.calibration.seed == 2


@pytest.fixture(scope="module")
def native(tmp_path_factory, cc_model):
    root = tmp_path_factory.mktemp("ablation")
    save_native(root / "nh", cc_model, family="nemotron_h")
    np.save(root / "ids.npy", np.random.default_rng(0).integers(1, 50, (8, 17)))
    return root


def _prune(native, out, *extra) -> int:
    return main(["prune", str(native / "nh"), str(out), "--target", "mamba_num_heads=2",
                 *extra])  # fmt: skip


def test_cli_random_ranking_from_data_equals_the_random_scores_file(native, tmp_path, capsys):
    calib = ["--samples", "8", "--seq-len", "16", "--batch-size", "8"]
    data = ["--data", str(native / "ids.npy"), *calib]
    scores = tmp_path / "s.npz"
    assert main(["importance", str(native / "nh"), "--out", str(scores), *data,
                 "--ranking", "random", "--seed", "3"]) == 0  # fmt: skip
    assert Scores.load(scores).meta["ranking"] == "random"
    assert _prune(native, tmp_path / "a", *data, "--ranking", "random", "--seed", "3") == 0
    assert "ranking: random (seed 3)" in capsys.readouterr().err
    assert _prune(native, tmp_path / "b", "--scores", str(scores)) == 0
    assert _prune(native, tmp_path / "u", "--scores", str(scores), "--mamba-grouping",
                  "unaware") == 0  # fmt: skip
    a, b = (model_params(load_native(tmp_path / n)[0]) for n in "ab")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    unaware, _ = load_native(tmp_path / "u")
    src, _ = load_native(native / "nh")
    t = {"mamba_num_heads": 2}
    expect = prune(src, Scores.load(scores).scores, t, mamba_grouping="unaware")
    assert unaware.config == expect.config
    u, e = model_params(unaware), model_params(expect)
    assert all(np.array_equal(u[k], e[k]) for k in e)


def test_cli_bad_switch_values_are_one_line(native, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _prune(native, tmp_path / "p", "--data", "x.npy", "--ranking", "rnd")
    err = capsys.readouterr().err
    assert e.value.code == EXIT_USAGE and err.count("error:") == 1 and "invalid choice" in err
    with pytest.raises(SystemExit) as e:
        _prune(native, tmp_path / "p", "--data", "x.npy", "--mamba-grouping", "global")
    assert e.value.code == EXIT_USAGE and "invalid choice: 'global'" in capsys.readouterr().err
    assert _prune(native, tmp_path / "p", "--data", "x.npy", "--seed", "-1") == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seed must be an integer >= 0" in err
    args = ["importance", str(native / "nh"), "--out", str(tmp_path / "s.npz")]
    assert main([*args, "--data", "x.npy", "--mamba-grouping", "unaware"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "applies when pruning" in err
    assert not (tmp_path / "p").exists() and not (tmp_path / "s.npz").exists()
