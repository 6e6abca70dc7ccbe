"""Command-line flags come from the library's config dataclasses: one default, one place."""

import argparse
import dataclasses

import pytest

from jaxprune.cli import build_parser
from jaxprune.cli.flags import add_dataclass_args, dataclass_from_args
from jaxprune.cli.train import RUN_FLAGS
from jaxprune.pipeline import CompressConfig
from jaxprune.pruning.scoring import ScoreConfig
from jaxprune.search.run import SearchConfig
from jaxprune.train.config import TrainConfig


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _dests(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in p._actions if a.dest != "help"}


@pytest.mark.parametrize("command", ["importance", "prune", "search"])
def test_calibration_flags_are_the_score_config_fields_with_its_defaults(command):
    actions = _dests(_subparser(command))
    for f in dataclasses.fields(ScoreConfig):
        assert f.name in actions, f"{command} lacks --{f.name}"
        assert actions[f.name].default == f.default
    assert actions["aggregation"].type is str


def test_search_flags_are_the_search_config_fields():
    actions = _dests(_subparser("search"))
    for f in dataclasses.fields(SearchConfig):
        assert f.name in actions
        if f.name == "params":
            assert actions[f.name].required
        else:
            assert actions[f.name].default == f.default, f.name


def test_every_search_and_calibration_flag_is_reachable_from_compress():
    """compress offers everything the separate commands offer, through its nested configs."""
    fields = {f.name: f for f in dataclasses.fields(CompressConfig)}
    assert fields["calibration"].type in ("ScoreConfig", ScoreConfig)
    assert "SearchConfig" in str(fields["search"].type)
    own = {"model", "out", "scores", "data", "tokenizer", "target", "json"}
    reachable = {f.name for f in dataclasses.fields(ScoreConfig)}
    reachable |= {f.name for f in dataclasses.fields(SearchConfig)}
    for command in ("importance", "prune", "search"):
        missing = set(_dests(_subparser(command))) - own - reachable - {"fn", "command"}
        assert not missing, (command, missing)


@pytest.mark.parametrize("command", ["distill", "train"])
def test_run_flags_are_train_config_fields(command):
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(RUN_FLAGS) <= names
    actions = _dests(_subparser(command))
    assert set(RUN_FLAGS) <= set(actions)
    for name in RUN_FLAGS:  # gin or the dataclass supplies the default, never the flag
        assert actions[name].default is argparse.SUPPRESS
        assert str(getattr(TrainConfig(), name)) in actions[name].help


@dataclasses.dataclass(frozen=True)
class _Demo:
    count: int = dataclasses.field(default=3, metadata={"help": "how many"})
    rate: float | None = None
    on: bool = False
    name: str = "x"


def test_add_dataclass_args_types_defaults_and_round_trip():
    p = argparse.ArgumentParser()
    add_dataclass_args(p, _Demo, defaults={"name": "y"})
    args = p.parse_args(["--count", "5", "--rate", "0.5", "--on"])
    assert dataclass_from_args(_Demo, args) == _Demo(count=5, rate=0.5, on=True, name="y")
    assert dataclass_from_args(_Demo, p.parse_args([])) == _Demo(name="y")
    assert p.parse_args(["--no-on"]).on is False
    with pytest.raises(SystemExit):
        p.parse_args(["--count", "many"])
    q = argparse.ArgumentParser()
    add_dataclass_args(q, _Demo, only=["count"], required=["count"])
    with pytest.raises(SystemExit):
        q.parse_args([])
    assert set(vars(q.parse_args(["--count", "1"]))) == {"count"}


def test_remat_flag_and_gin_binding_reach_the_train_config():
    from jaxprune.cli.train import build_train_config

    sp = _subparser("distill")
    base = ["--teacher", "t", "--student", "s", "--data", "d", "--out", "o"]
    cfg = lambda *extra: build_train_config(sp.parse_args([*base, *extra]), distill=True)  # noqa: E731
    assert cfg().remat == "none"
    assert cfg("--remat", "block").remat == "block"
    assert cfg("--gin_param", 'TrainConfig.remat = "block"').remat == "block"
    assert cfg("--gin_param", 'TrainConfig.remat = "block"', "--remat", "none").remat == "none"
    with pytest.raises(SystemExit):
        sp.parse_args([*base, "--remat", "all"])
