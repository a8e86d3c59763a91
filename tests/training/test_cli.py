import json
import subprocess
import sys
from pathlib import Path

import pytest

from models.bundle import load_bundle
from training.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_lm_command_trains_a_bundle(tmp_path: Path, tiny_corpus: Path, capsys) -> None:
    out = tmp_path / "tiny-lm"
    code = main(
        [
            "-q",
            "lm",
            "--out",
            str(out),
            "--corpus",
            str(tiny_corpus),
            "--epochs",
            "1",
            "--num-hiddens",
            "16",
            "--batch-size",
            "4",
            "--num-steps",
            "8",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["best_epoch"] == 1 and summary["out"] == str(out)
    assert load_bundle(out).config["model"]["num_hiddens"] == 16


def test_sine_command_writes_a_forecaster(tmp_path: Path, capsys) -> None:
    assert main(["-q", "sine", "--out", str(tmp_path / "sine"), "--epochs", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["k_step_mse"]) == {"1", "4", "16", "64"}
    assert load_bundle(tmp_path / "sine").kind == "forecaster"


@pytest.mark.parametrize(
    "flags",
    [
        ["--epochs", "0"],
        ["--arch", "transformer"],
        ["--val-frac", "1.5"],
        ["--lr", "-1"],
        ["--arch", "rnn_scratch", "--num-layers", "2"],
    ],
)
def test_bad_flags_exit_2(tmp_path: Path, flags: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["lm", "--out", str(tmp_path / "x"), *flags])
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_missing_corpus_exits_1_with_a_message(tmp_path: Path, capsys) -> None:
    code = main(
        [
            "lm",
            "--out",
            str(tmp_path / "x"),
            "--corpus",
            "timemachine",
            "--data-dir",
            str(tmp_path),
            "--cache-dir",
            str(tmp_path / "c"),
            "--no-download",
        ]
    )
    assert code == 1
    assert "timemachine" in capsys.readouterr().err


@pytest.mark.parametrize("out", ["Bad Name", "file.txt/inside"])
def test_bad_output_path_exits_1(tmp_path: Path, tiny_corpus: Path, out: str, capsys) -> None:
    (tmp_path / "file.txt").write_text("a file, not a directory")
    code = main(["lm", "--out", str(tmp_path / out), "--corpus", str(tiny_corpus), "--epochs", "1"])
    assert code == 1
    assert "error:" in capsys.readouterr().err


@pytest.mark.system
def test_module_entry_point_shows_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training", "lm", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0 and "--num-hiddens" in result.stdout


def test_kn_command_reports_held_out_perplexity(tiny_corpus: Path, capsys) -> None:
    assert main(["-q", "kn", "--corpus", str(tiny_corpus), "--order", "2", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["smoothing"] == "kn"
    assert set(summary["val_ppl_by_order"]) == {"2", "3"}
    assert all(1 < p < 30 for p in summary["val_ppl_by_order"].values())
