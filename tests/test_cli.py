import json

from jaxprune.cli import main
from jaxprune.counts import count_params
from jaxprune.presets import PRESETS, get_preset


def test_info_prints_the_analytic_counts(capsys):
    assert main(["info", "--preset", "bench-10m", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total"] == count_params(get_preset("bench-10m"))["total"]
    assert 10_000_000 < out["total"] < 11_000_000


def test_info_reads_a_config_json(tmp_path, capsys):
    path = tmp_path / "model.json"
    path.write_text(json.dumps(get_preset("tiny-llama").to_dict()))
    assert main(["info", "--config", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pattern"] == "*-" * 4


def test_check_runs_every_check_on_a_small_model(capsys):
    code = main(
        [
            "check",
            "--preset",
            "tiny-hybrid",
            "--batch",
            "2",
            "--seq-len",
            "12",
            "--new-tokens",
            "4",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"]
    assert len(report["checks"]) == 4
    assert report["cache_bytes"]["kv"] > 0 and report["cache_bytes"]["ssm"] > 0


def test_bad_input_gives_one_line_error_and_exit_2(tmp_path, capsys):
    assert main(["info", "--preset", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown preset" in err
    assert main(["info", "--config", str(tmp_path / "missing.json")]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["info", "--config", str(bad)]) == 2
    assert main(["check", "--seq-len", "0"]) == 2


def test_presets_are_valid():
    for name in PRESETS:
        assert get_preset(name).name == name
