"""`jaxlayers train` end to end on a small configuration: artefacts, summary, resume, errors."""

from __future__ import annotations

import json

import pytest

from jaxlayers import cli, train

SMALL = [
    "--hidden-dims",
    "24",
    "--epochs",
    "2",
    "--batch-size",
    "100",
    "--dropout-rate",
    "0.1",
    "--lr",
    "0.01",
    "--quiet",
]


def _run(capsys, *argv):
    code = cli.main(["train", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_end_to_end_writes_all_five_artefacts(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, _ = _run(capsys, *SMALL, "--output-dir", str(run_dir))
    assert code == 0
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(cli.RUN_FILES)
    assert all((run_dir / name).stat().st_size > 0 for name in cli.RUN_FILES)

    config = json.loads((run_dir / "config.json").read_text())
    assert config["dataset"] == "digits"
    net = config["model"]["config"]
    assert config["model"]["class"] == "FullyConnectedNet"
    assert net["hidden_dims"] == [24] and net["input_dim"] == 64
    assert net["normalization"] == "batchnorm" and net["dropout_rate"] == 0.1
    assert config["train"]["epochs"] == 2 and config["train"]["batch_size"] == 100

    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    assert lines[-1]["step"] == 2 * (1293 // 100)
    assert {"loss", "train_acc", "val_acc", "lr", "epoch_time_s"} <= set(lines[0])

    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert train.read_checkpoint_metadata(run_dir / "checkpoint.safetensors")["epoch"] == 2

    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0.5 < summary["test_acc"] <= 1.0 and summary["epochs"] == 2 and summary["steps"] == 24
    assert summary["wall_time_s"] > 0
    # the printed summary: accuracies, wall time, steps/s
    assert f"test acc {summary['test_acc']:.4f}" in out
    assert "train acc" in out and "val acc" in out and "wall time" in out and "steps/s" in out


def test_resume_takes_the_run_settings_and_extends_it(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert _run(capsys, *SMALL, "--epochs", "1", "--seed", "3", "-o", str(run_dir))[0] == 0
    # only --resume, the directory and the new epoch count: everything else comes from the checkpoint
    code, out, _ = _run(capsys, "--resume", "--epochs", "2", "--quiet", "-o", str(run_dir))
    assert code == 0, out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from_epoch"] == 1 and summary["epochs"] == 2
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["config"]["hidden_dims"] == [24] and config["train"]["seed"] == 3
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    # a conflicting flag is refused, naming it
    code, _, err = _run(capsys, "--resume", "--epochs", "3", "--lr", "0.5", "--quiet", "-o", str(run_dir))
    assert code == 2 and "--learning-rate: checkpoint 0.01, now 0.5" in err  # a usage error, before training
    # model flags given with --resume apply over the checkpoint's record: the same value resumes, another is refused
    code, _, err = _run(capsys, "--resume", "--epochs", "3", "--hidden-dims", "32", "-q", "-o", str(run_dir))
    assert code == 2 and "config.--hidden-dims: checkpoint [24], now [32]" in err
    code, out, _ = _run(capsys, "--resume", "--epochs", "3", "--hidden-dims", "24", "-q", "-o", str(run_dir))
    assert code == 0 and "hidden_dims=[24]" in out and "dropout_rate=0.1" in out  # the rest from the checkpoint


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--dataset", "mnist:/nonexistent/dir"], "not a directory"),
        (["--batch-size", "5000"], "--batch-size 5000 is larger than the 1293 training examples"),
        (["--dropout-rate", "1.5"], "dropout_rate"),
        (["--resume"], "no checkpoint at"),
    ],
)
def test_clear_errors(tmp_path, capsys, argv, message):
    code, _, err = _run(capsys, *SMALL, *argv, "-o", str(tmp_path / "run"))
    assert code != 0
    assert message in err and err.startswith("jaxlayers train: error:")


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--dataset", "--hidden-dims", "--normalization", "--dropout-rate", "--loss", "--optimizer",
                 "--learning-rate", "--lr-decay", "--reg", "--epochs", "--batch-size", "--seed", "--output-dir",
                 "--resume"):  # fmt: skip
        assert flag in text


def test_train_a_convnet_from_the_cli_resume_and_evaluate(tmp_path, capsys):
    run_dir = tmp_path / "conv"
    flags = ["--model", "convnet", "--conv-channels", "4", "--hidden-dims", "16", "--batch-size", "100", "--quiet"]
    code, out, _ = _run(capsys, *flags, "--epochs", "1", "--lr", "0.01", "--output-dir", str(run_dir))
    assert code == 0, out
    assert "model: ConvNet(input_dim=[1, 8, 8], conv_channels=[4]" in out
    meta = train.read_checkpoint_metadata(run_dir / "checkpoint.safetensors")
    assert meta["models"][0]["class"] == "ConvNet" and meta["models"][0]["config"]["conv_channels"] == [4]
    # --resume rebuilds the ConvNet from the checkpoint: no model flag needed
    code, out, _ = _run(capsys, "--resume", "--epochs", "2", "--quiet", "--output-dir", str(run_dir))
    assert code == 0 and "conv_channels=[4]" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 2
    assert cli.main(["evaluate", str(run_dir)]) == 0
    assert f"accuracy {summary['test_acc']:.4f}" in capsys.readouterr().out


def test_convnet_presets_fill_the_flags_not_given(tmp_path):
    args = cli.build_parser().parse_args(["train", "--model", "convnet", "--dataset", "mnist1d", "--epochs", "3"])
    opts = cli._resolve(args, cli._given(["train", "--model", "convnet", "--dataset", "mnist1d", "--epochs", "3"]))
    preset = cli.CONVNET_PRESETS["mnist1d"]
    assert opts["epochs"] == 3  # given
    assert opts["filter_size"] == preset["filter_size"] and opts["conv_channels"] == preset["conv_channels"]
