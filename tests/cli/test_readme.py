"""README's Commands section and the parsers agree: every documented command and option
exists, every command is documented, so the two cannot drift."""

import argparse
import re
from pathlib import Path

import pytest

from jaxprune.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _documented() -> dict[str, set[str]]:
    """command -> the --options its README lines mention (continuation lines included)."""
    text = README.read_text()
    section = text[text.index("## Commands") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)[1]
    out: dict[str, set[str]] = {}
    command = None
    for line in block.splitlines():
        line = line.split("#")[0]
        m = re.match(r"\s*jaxprune\s+([a-z]+)", line)
        if m:
            command = m[1]
            out.setdefault(command, set())
        if command is not None:
            out[command] |= set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", line))
    return out


def test_every_command_is_documented_and_exists():
    assert set(_documented()) == set(_subparsers())


@pytest.mark.parametrize("command", sorted(_documented()))
def test_every_documented_option_exists(command):
    parser = _subparsers()[command]
    options = {s for a in parser._actions for s in a.option_strings}
    missing = _documented()[command] - options
    assert not missing, f"README documents {sorted(missing)} for `jaxprune {command}`"


def test_the_check_catches_an_option_that_does_not_exist(monkeypatch, tmp_path):
    fake = tmp_path / "README.md"
    fake.write_text("## Commands\n\n```bash\njaxprune export NATIVE OUT [--no-such-flag]\n```\n")
    monkeypatch.setitem(globals(), "README", fake)
    assert _documented() == {"export": {"--no-such-flag"}}
    with pytest.raises(AssertionError, match="no-such-flag"):
        test_every_documented_option_exists("export")


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_every_help_shows_defaults(command):
    parser = _subparsers()[command]
    assert parser.formatter_class is argparse.ArgumentDefaultsHelpFormatter
    parser.format_help()  # a stray % in a help string would raise here


@pytest.mark.parametrize(
    "command", ["eval", "importance", "prune", "search", "distill", "train", "generate"]
)
def test_every_command_that_reads_text_takes_a_tokenizer(command):
    options = {s for a in _subparsers()[command]._actions for s in a.option_strings}
    assert "--tokenizer" in options
