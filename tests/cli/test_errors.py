"""One error mapping for every command: bad input is one line and exit 2, a bug keeps its
traceback."""

import argparse

import jax.numpy as jnp
import pytest

from jaxprune.cli import EXIT_NONFINITE, EXIT_USAGE, main, run_command
from jaxprune.errors import UserError
from jaxprune.train.trainer import NonFiniteError


def _run(exc: BaseException) -> int:
    def fn(_):
        raise exc

    return run_command(argparse.Namespace(fn=fn))


def test_user_errors_are_one_line_and_exit_2(capsys):
    assert _run(UserError("bad target hiden_size\nsecond line")) == EXIT_USAGE
    assert capsys.readouterr().err == "jaxprune: error: bad target hiden_size\n"
    assert _run(FileNotFoundError(2, "No such file", "x.npy")) == EXIT_USAGE
    assert "x.npy" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback():
    with pytest.raises(TypeError):  # a jnp shape error is a bug, not bad input
        _run_real_bug()
    with pytest.raises(ValueError, match="internal"):
        _run(ValueError("internal invariant"))
    with pytest.raises(KeyError):
        _run(KeyError("x"))


def _run_real_bug():
    def fn(_):
        return jnp.dot(jnp.ones((2, 3)), jnp.ones((4, 5)))

    return run_command(argparse.Namespace(fn=fn))


def test_non_finite_training_stops_with_exit_1(capsys):
    assert _run(NonFiniteError("10 consecutive non-finite steps")) == EXIT_NONFINITE
    assert "stopped: 10 consecutive" in capsys.readouterr().err


def test_compress_maps_errors_like_every_command(tmp_path, capsys):
    assert main(["compress", str(tmp_path / "missing.gin")]) == EXIT_USAGE
    assert "gin file not found" in capsys.readouterr().err
    gin = tmp_path / "bad.gin"
    gin.write_text('CompressConfig.model = "m"\nCompressConfig.data = "d"\n')
    assert main(["compress", str(gin)]) == EXIT_USAGE  # no out, no targets
    assert capsys.readouterr().err.count("\n") == 1
