"""gin: the only module that imports it. Binds the library's config dataclasses
(``TrainConfig``, ``LossConfig``, ``OptimConfig``, ``CompressConfig``, ``ScoreConfig``,
``SearchConfig``, ``PuzzleConfig``, ``DMCTrainConfig``) as configurables named ``<Name>`` /
``jaxprune.<Name>``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from jaxprune.errors import UserError

_REGISTERED = False


def _configurables() -> tuple[type, ...]:
    from jaxprune.dmc.objective import DMCTrainConfig
    from jaxprune.pipeline import CompressConfig
    from jaxprune.pruning.scoring import ScoreConfig
    from jaxprune.puzzle.full import PuzzleConfig
    from jaxprune.search.run import SearchConfig
    from jaxprune.train.config import LossConfig, OptimConfig, TrainConfig

    return (TrainConfig, LossConfig, OptimConfig, CompressConfig, ScoreConfig, SearchConfig,
            PuzzleConfig, DMCTrainConfig)  # fmt: skip


def _register() -> None:
    import gin

    global _REGISTERED
    if not _REGISTERED:
        for cls in _configurables():
            gin.external_configurable(cls, name=cls.__name__, module="jaxprune")
        _REGISTERED = True


def config_from_gin(files: Sequence[str], params: Sequence[str], target: type):
    """``target()`` (one of the config dataclasses) built by gin from ``files`` and
    ``params`` bindings; UserError (one line) for a missing file or a bad binding."""
    return configs_from_gin(files, params, (target,))[0]


def configs_from_gin(files: Sequence[str], params: Sequence[str], targets: Sequence[type]):
    """One instance per ``targets`` entry, all from the same bindings (a binding must
    reach at least one of them)."""
    import gin

    _register()
    gin.clear_config()
    for f in files:
        if not Path(f).is_file():
            raise UserError(f"gin file not found: {f}")
        gin.add_config_file_search_path(str(Path(f).resolve().parent))  # for `include`
    try:
        gin.parse_config_files_and_bindings(list(files), list(params))
        cfgs = tuple(_fill_nested(gin.get_configurable(t)()) for t in targets)
    except (ValueError, TypeError, KeyError, SyntaxError) as e:
        raise UserError(f"gin config: {str(e).strip().splitlines()[0]}") from e
    unused = _unused_bindings()
    if unused:
        raise UserError(
            f"gin config: {', '.join(unused)} reaches nothing this run uses (misspelt, or "
            "its configurable is never built: bind it where it is used, e.g. "
            "'TrainConfig.optim = @OptimConfig()')"
        )
    return cfgs


def _bound_anywhere(cls: type, name: str) -> bool:
    """Is ``cls.name`` bound in any scope?"""
    import gin

    selector = f"jaxprune.{cls.__name__}"
    return any(sel == selector and name in ps for (_, sel), ps in gin.config._CONFIG.items())


def _fill_nested(obj):
    """Nested config dataclasses left to their ``default_factory`` (bound nowhere) are built
    by gin too, so that ``OptimConfig.lr = 0.5`` reaches the default ``TrainConfig.optim``."""
    import gin

    registered = _configurables()
    changes = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if type(value) not in registered:
            continue
        if f.default_factory is not dataclasses.MISSING and not _bound_anywhere(type(obj), f.name):
            value = gin.get_configurable(type(value))()
        changes[f.name] = _fill_nested(value)
    return dataclasses.replace(obj, **changes) if changes else obj


def _unused_bindings() -> list[str]:
    """``scope/Name.param`` of every binding that no configurable call consumed."""
    import gin

    used = gin.config._OPERATIVE_CONFIG
    out = []
    for (scope, selector), params in gin.config._CONFIG.items():
        if selector == "gin.macro":
            continue
        for name in params:
            if name not in used.get((scope, selector), {}):
                short = selector.rsplit(".", 1)[-1]
                out.append(f"{scope + '/' if scope else ''}{short}.{name}")
    return sorted(out)


def train_config_from_gin(files: Sequence[str], params: Sequence[str]):
    """A :class:`~jaxprune.train.config.TrainConfig` built by gin."""
    from jaxprune.train.config import TrainConfig

    return config_from_gin(files, params, TrainConfig)
