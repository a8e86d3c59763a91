"""Training reports: the curves PNG inside each bundle, and `python -m training list`."""

import copy
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from models.bundle import CURVES, load_bundle
from models.forecast import SineConfig
from tests.conftest import tiny_train_config
from tests.training.test_loop import small_config
from training import loop
from training.cli import main
from training.loop import train
from training.report import BundleRow, format_table, list_bundles
from training.sine import train_sine

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory as the service sees it: two good bundles, a broken one, resume state."""
    root = tmp_path_factory.mktemp("report")
    corpus = root / "tiny.txt"
    corpus.write_text("the time traveller smiled round at us " * 40)
    train(tiny_train_config(root / "ck" / "tiny-gru", corpus))
    train_sine(SineConfig(epochs=2), root / "ck" / "sine-mlp")
    return root / "ck"


def test_a_training_run_writes_its_curves_into_the_bundle(bundles: Path) -> None:
    curves = (bundles / "tiny-gru" / CURVES).read_bytes()
    assert png_size(curves) == (640, 800)  # perplexity, then the gradient norm
    listed = load_bundle(bundles / "tiny-gru").config["files"][CURVES]
    assert listed == hashlib.sha256(curves).hexdigest()  # hashed like every other file
    assert png_size((bundles / "sine-mlp" / CURVES).read_bytes()) == (640, 400)


def test_a_failed_epoch_never_leaves_the_curves_out_of_step(
    tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = loop.png

    def fail_on_second(figure):
        calls.append(figure)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(figure)

    monkeypatch.setattr(loop, "png", fail_on_second)
    monkeypatch.setattr(loop, "clock", lambda: 0.0)  # drawing costs nothing: every epoch draws
    config = small_config(tmp_path, tiny_corpus, epochs=2)
    with pytest.raises(OSError, match="disk full"):
        train(config)
    bundle = load_bundle(config.out)  # epoch 1's bundle, whole: hashes check out
    assert len(bundle.metrics["epochs"]) == 1
    assert sorted(p.name for p in config.out.parent.iterdir() if "tmp" in p.name) == []


class FakeClock:
    """The curves' clock: a drawing takes `draw_s`, and `epoch_s` passes at each resume
    save (once per epoch, after the epoch's bundle)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, draw_s: float, epoch_s: float) -> None:
        self.now = 0.0
        real_draw, real_resume = loop.draw_curves, loop.save_resume

        def draw(*args: Any) -> bytes:
            self.now += draw_s
            return real_draw(*args)

        def resume(*args: Any) -> None:
            self.now += epoch_s
            real_resume(*args)

        monkeypatch.setattr(loop, "clock", lambda: self.now)
        monkeypatch.setattr(loop, "draw_curves", draw)
        monkeypatch.setattr(loop, "save_resume", resume)


def saves_with_curves(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each bundle the run saves, in order, carries curves.png."""
    saved: list[bool] = []
    real = loop.save_bundle

    def save(*args: Any) -> None:
        saved.append(CURVES in args[5])
        real(*args)

    monkeypatch.setattr(loop, "save_bundle", save)
    return saved


def test_the_curves_are_drawn_once_per_trained_epoch(
    tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Epochs far longer than a drawing: every epoch's bundle has its curves; the final save
    (the same history, plus the samples) reuses the last epoch's PNG, and a resumed run with
    no epoch left to train draws them for its one save."""
    histories: list[list[dict]] = []
    real = loop.curves_figure

    def counted(history, *args, **kw):
        histories.append(copy.deepcopy(list(history)))
        return real(history, *args, **kw)

    monkeypatch.setattr(loop, "curves_figure", counted)
    FakeClock(monkeypatch, draw_s=0.1, epoch_s=60.0)
    saved = saves_with_curves(monkeypatch)
    config = small_config(tmp_path, tiny_corpus, epochs=2)
    train(config)
    assert [len(h) for h in histories] == [1, 2]
    assert saved == [True, True, True]
    assert "samples" in load_bundle(config.out).metrics
    reused = (config.out / CURVES).read_bytes()
    histories.clear()
    train(config, resume=True)  # both epochs done: nothing to train, one save
    assert [len(h) for h in histories] == [2]
    assert (config.out / CURVES).read_bytes() == reused  # as drawn afresh from the history


def test_epochs_shorter_than_a_drawing_redraw_the_curves_within_their_time_share(
    tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drawing of 1 s and epochs of 4 s: drawn after epoch 1, then again only once 10 s
    (1 s / CURVES_TIME_SHARE) have passed since, after epoch 4; the bundles in between
    carry no curves.png rather than stale ones, and the final bundle has the whole run's."""
    assert loop.CURVES_TIME_SHARE == 0.1
    FakeClock(monkeypatch, draw_s=1.0, epoch_s=4.0)
    saved = saves_with_curves(monkeypatch)
    config = small_config(tmp_path, tiny_corpus, epochs=5)
    train(config)
    assert saved == [True, False, False, True, False, True]  # epochs 1-5, then the final
    bundle = load_bundle(config.out)
    assert len(bundle.metrics["epochs"]) == 5
    history = bundle.metrics["epochs"]
    assert (config.out / CURVES).read_bytes() == loop.draw_curves(config, history)


def test_list_prints_a_row_per_bundle_and_flags_broken_ones(
    bundles: Path, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "checkpoints"
    shutil.copytree(bundles, folder)
    assert (folder / ".tiny-gru.resume").is_dir()  # hidden resume state: not a bundle
    (folder / "notes.txt").write_text("not a directory")
    broken = folder / "broken"
    shutil.copytree(folder / "tiny-gru", broken)
    (broken / "weights.safetensors").write_bytes(b"truncated")
    assert main(["list", str(folder)]) == 1  # a bundle the service could not serve
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "name", "kind", "arch", "params", "epochs", "best", "epoch", "train", "ppl", "val", "ppl"
    ]  # fmt: skip
    assert [line.split()[0] for line in lines[1:]] == ["broken", "sine-mlp", "tiny-gru"]
    assert "UNREADABLE" in lines[1] and "weights.safetensors does not match its sha256" in lines[1]
    gru = lines[3].split()
    metrics = json.loads((folder / "tiny-gru" / "metrics.json").read_text())
    params = load_bundle(folder / "tiny-gru").config["training"]["parameters"]
    assert gru[1:5] == ["char-lm", "gru", f"{params:,}", "2"]
    assert gru[5] == str(metrics["best_epoch"])
    assert float(gru[7]) == pytest.approx(metrics["best_val_ppl"], abs=1e-3)
    assert lines[2].split()[1:4] == ["forecaster", "mlp", "61"]


def test_list_of_good_bundles_exits_0_and_old_bundles_without_curves_are_listed(
    bundles: Path, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "old"
    shutil.copytree(bundles / "tiny-gru", folder / "tiny-gru")
    config_path = folder / "tiny-gru" / "config.json"
    config = json.loads(config_path.read_text())
    del config["files"][CURVES]  # as written before curves.png existed
    config_path.write_text(json.dumps(config))
    (folder / "tiny-gru" / CURVES).unlink()
    assert main(["list", str(folder)]) == 0
    assert "char-lm" in capsys.readouterr().out


def test_list_of_a_missing_or_empty_directory(tmp_path: Path, capsys) -> None:
    assert main(["list", str(tmp_path / "nowhere")]) == 1
    assert "not a directory" in capsys.readouterr().err
    assert main(["list", str(tmp_path)]) == 0
    assert "no bundles" in capsys.readouterr().out


def test_names_the_service_would_skip_are_flagged(tmp_path: Path) -> None:
    (tmp_path / "My Model").mkdir()
    rows = list_bundles(tmp_path)
    assert rows == [BundleRow("My Model", error="not a valid bundle name; the service skips it")]
    assert "UNREADABLE: not a valid bundle name" in format_table(rows)
