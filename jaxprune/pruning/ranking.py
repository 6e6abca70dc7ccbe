"""The ablation switches of pruning: which ranking decides what is kept, and whether Mamba
heads keep their groups.

``ranking``
    ``importance`` (default): the calibrated activation scores. ``random``: every score
    replaced by a uniform random value drawn from ``seed`` (per score key, so one key's
    values do not depend on which other keys exist), with the same shapes. The rankings
    then go through the same group-aware planning as importance scores do
    (:func:`jaxprune.pruning.prune.plan`), so a random pruning respects the same structure:
    Mamba heads ranked within their group with every group keeping the same count, one
    head-channel set shared by all heads, attention heads within their KV query groups,
    whole KV groups, embedding channels, MLP neurons, experts within routing groups, and
    random depth rankings when layers are dropped by ranking. Same seed, same pruning.

``mamba_grouping``
    ``aware`` (default): the kept Mamba heads are chosen within each of the ``n_groups``
    B/C groups (every group keeps the same count), so each head still reads its own
    group's B and C. ``unaware`` (the failure mode the group-aware SSM pruning paper warns
    about): heads are ranked globally across groups, the top k are kept in index order
    and reshaped into ``n_groups`` equal groups, so the j-th kept head lands in group
    ``j // (k / n_groups)`` whatever group it came from; a head moved to another group
    reads that group's B / C and shares its gated norm from then on. The group's
    conv / B / C weights are not touched. Only Mamba blocks have this switch (attention and
    expert groups are always respected).

An unaware pruning is recorded in the kept indices as a head permutation,
``blocks.<i>.mamba_head_order`` (slot -> source head, over the full head count), applied
before slicing: each kept head is moved into a slot of its new group, and
``blocks.<i>.mamba_heads`` then lists the kept slots (equal in each group, as always).
:func:`jaxprune.pruning.masks.mask_from_keep` keeps the permutation in the mask, so the
masked model computes exactly what the materialized one does.
"""

from __future__ import annotations

import zlib

import numpy as np

from jaxprune.errors import UserError

RANKINGS = ("importance", "random")
GROUPINGS = ("aware", "unaware")

#: kept-index key suffix of a Mamba block's head permutation (unaware grouping).
ORDER = "mamba_head_order"

_RANKED = {"mlp", "heads", "mamba", "experts", "expert_mlp", "shared_mlp"}


def check_switches(ranking: str, seed: int, mamba_grouping: str) -> None:
    """UserError for a ranking / grouping that does not exist or a negative seed."""
    if ranking not in RANKINGS:
        raise UserError(f"ranking {ranking!r}; choose from {', '.join(RANKINGS)}")
    if mamba_grouping not in GROUPINGS:
        raise UserError(f"mamba grouping {mamba_grouping!r}; choose from {', '.join(GROUPINGS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed must be an integer >= 0, got {seed!r}")


def is_ranking(key: str) -> bool:
    """True for the score keys that rank a group (not e.g. ``router_count``)."""
    return key == "hidden" or key.startswith("depth_") or key.split(".")[-1] in _RANKED


def random_scores(scores: dict, seed: int) -> dict:
    """``scores`` with every ranking replaced by uniform random values from ``seed`` (same
    shapes; other entries unchanged). Deterministic: a key's values depend only on
    ``seed``, the key and its shape."""
    check_switches("random", seed, "aware")
    out = dict(scores)
    for key, s in scores.items():
        if is_ranking(key):
            rng = np.random.default_rng([int(seed), zlib.crc32(key.encode())])
            out[key] = rng.random(np.shape(s))
    return out


def ranked_scores(scores: dict, ranking: str, seed: int = 0) -> dict:
    """The scores the ``ranking`` switch prunes by: ``scores`` itself for ``importance``,
    :func:`random_scores` for ``random``."""
    check_switches(ranking, seed, "aware")
    return random_scores(scores, seed) if ranking == "random" else scores


def regroup(heads: np.ndarray, num_heads: int, n_groups: int):
    """Unaware grouping of globally kept ``heads`` (any count divisible by ``n_groups``):
    the j-th kept head (index order) goes to group ``j // k``, k = len(heads) / n_groups.

    Returns ``(slots, order)``: ``order`` (num_heads,) is the permutation slot -> source
    head that puts group g's kept heads into slots ``g * r .. g * r + k - 1`` (r =
    num_heads / n_groups; removed heads fill the other slots) and ``slots`` the kept
    slots. ``order`` is None when every kept head already is in its own group (then the
    grouping is the aware one and ``slots`` are ``heads``)."""
    heads = np.sort(np.asarray(heads, int))
    k, r = len(heads) // n_groups, num_heads // n_groups
    if np.array_equal(heads // r, np.arange(len(heads)) // k):
        return heads, None
    rest = iter(np.setdiff1d(np.arange(num_heads), heads).tolist())
    order = np.empty(num_heads, int)
    slots = []
    for g in range(n_groups):
        for j in range(r):
            if j < k:
                order[g * r + j] = heads[g * k + j]
                slots.append(g * r + j)
            else:
                order[g * r + j] = next(rest)
    return np.array(slots), order


def head_orders(kept: dict) -> dict[str, np.ndarray]:
    """{``blocks.<i>.mamba_heads``: permutation} for every head order in ``kept``, each
    checked to be a permutation of the block's heads."""
    out = {}
    for key, order in kept.items():
        if key.endswith("." + ORDER):
            order = np.asarray(order, int)
            if not np.array_equal(np.sort(order), np.arange(len(order))):
                raise UserError(f"{key}: not a permutation of the block's heads")
            out[key[: -len(ORDER)] + "mamba_heads"] = order
    return out
