import hashlib
import json
import os
import time
from pathlib import Path

import pytest
import torch

from models import bundle as bundle_module
from models.bundle import BundleError, load_bundle, read_config, save_bundle
from models.forecast import Forecaster, ForecasterConfig
from models.text import Tokenizer, Vocab
from tests.conftest import ROOT, tiny_lm


@pytest.fixture
def bundle(tmp_path: Path, char_tokenizer: Tokenizer) -> Path:
    path = tmp_path / "tiny-gru"
    save_bundle(path, tiny_lm("gru"), char_tokenizer, {"seed": 0}, {"best_val_ppl": 9.5})
    return path


def test_round_trip(bundle: Path, char_tokenizer: Tokenizer) -> None:
    loaded = load_bundle(bundle)
    assert loaded.kind == "char-lm" and loaded.name == "tiny-gru"
    assert loaded.tokenizer is not None
    assert loaded.tokenizer.vocab.idx_to_token == char_tokenizer.vocab.idx_to_token
    assert loaded.metrics == {"best_val_ppl": 9.5}
    X = torch.randint(0, 28, (2, 9))
    torch.testing.assert_close(loaded.model(X)[0], tiny_lm("gru")(X)[0])
    assert sorted(p.name for p in bundle.iterdir()) == [
        "config.json",
        "metrics.json",
        "vocab.json",
        "weights.safetensors",
    ]


def test_half_precision_weights_halve_the_file_and_load_as_float32(
    tmp_path: Path, bundle: Path, char_tokenizer: Tokenizer
) -> None:
    model = tiny_lm("gru")
    half = tmp_path / "tiny-gru-half"
    save_bundle(half, model, char_tokenizer, weights_dtype=torch.float16)
    full_size = (bundle / "weights.safetensors").stat().st_size
    assert (half / "weights.safetensors").stat().st_size < 0.6 * full_size
    loaded = load_bundle(half)
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    for name, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, model.state_dict()[name].half().float())


def test_forecaster_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Forecaster(ForecasterConfig())
    save_bundle(tmp_path / "sine", model, training={"sine": {}})
    loaded = load_bundle(tmp_path / "sine")
    assert loaded.kind == "forecaster" and loaded.tokenizer is None
    X = torch.randn(5, 4)
    torch.testing.assert_close(loaded.model(X), model(X))


def test_saving_again_replaces_atomically(bundle: Path, char_tokenizer: Tokenizer) -> None:
    save_bundle(bundle, tiny_lm("lstm"), char_tokenizer)
    assert load_bundle(bundle).config["model"]["arch"] == "lstm"
    assert [p.name for p in bundle.parent.iterdir()] == ["tiny-gru"]  # no temporary left


def test_bundle_is_readable_by_other_users(bundle: Path) -> None:
    """A container's non-root user must read bundles trained by root into a volume."""
    assert bundle.stat().st_mode & 0o777 == 0o755


def rewrite_config(bundle: Path, **changes) -> None:
    config = json.loads((bundle / "config.json").read_text())
    config.update(changes)
    (bundle / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: (b / "weights.safetensors").unlink(), "missing weights.safetensors"),
        (lambda b: (b / "config.json").unlink(), "missing config.json"),
        (
            lambda b: (b / "weights.safetensors").write_bytes(
                (b / "weights.safetensors").read_bytes()[:100]
            ),
            "does not match its sha256",
        ),
        (
            lambda b: (b / "vocab.json").write_text('{"idx_to_token": ["<unk>"]}'),
            "vocab.json does not match",
        ),
        (lambda b: rewrite_config(b, format_version=99), "newer than this rnnlm reads"),
        (lambda b: (b / "config.json").write_text('{"hello": 1}'), "not an rnnlm bundle"),
        (lambda b: (b / "config.json").write_text("\x00garbage"), "not valid JSON"),
        (lambda b: rewrite_config(b, kind="image-model"), "unknown kind"),
    ],
)
def test_damaged_bundles_are_rejected_by_name_and_reason(bundle: Path, damage, reason: str) -> None:
    damage(bundle)
    with pytest.raises(BundleError, match=reason) as info:
        load_bundle(bundle)
    assert info.value.name == "tiny-gru"


def test_weights_that_do_not_fit_the_config(bundle: Path) -> None:
    config = json.loads((bundle / "config.json").read_text())
    config["model"]["num_hiddens"] = 32
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match=r"does not describe the weights: .*\(5 tensors differ\)"):
        load_bundle(bundle)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("num_hiddens", 2**31, "model.num_hiddens = 2147483648, more than the .* values"),
        ("vocab_size", 10**12, "model.vocab_size"),
        ("num_layers", 10**6, "model.num_layers = 1000000, more than the .* tensors"),
    ],
)
def test_sizes_the_weights_cannot_hold_are_rejected_before_building(
    bundle: Path, monkeypatch, field, value, reason
) -> None:
    """config.json is covered by no hash: its sizes are checked against the weights' header."""
    config = json.loads((bundle / "config.json").read_text())
    config["model"][field] = value
    (bundle / "config.json").write_text(json.dumps(config))
    monkeypatch.setitem(bundle_module._BUILDERS, "char-lm", pytest.fail)  # nothing is built
    with pytest.raises(BundleError, match=reason):
        load_bundle(bundle)


@pytest.mark.parametrize(
    ("metrics", "reason"),
    [([], "must hold a JSON object"), ({"epochs": {}}, "epochs"), ({"best_epoch": "1"}, "best")],
)
def test_metrics_of_the_wrong_shape_are_rejected(bundle: Path, metrics, reason) -> None:
    (bundle / "metrics.json").write_text(json.dumps(metrics))
    config = json.loads((bundle / "config.json").read_text())
    config["files"]["metrics.json"] = hashlib.sha256(
        (bundle / "metrics.json").read_bytes()
    ).hexdigest()
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match=reason):
        load_bundle(bundle)


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no bundle directory"):
        read_config(tmp_path / "absent")


def test_bad_names_are_refused(tmp_path: Path, char_tokenizer: Tokenizer) -> None:
    with pytest.raises(BundleError, match="name must match"):
        save_bundle(tmp_path / "Bad Name", tiny_lm("gru"), char_tokenizer)


SAVER = """
import sys, torch
from pathlib import Path
from models.bundle import save_bundle
from models.rnn import LMConfig, build_model
from models.text import Tokenizer, Vocab
tok = Tokenizer(Vocab.build(list("abcdefghijklmnopqrstuvwxyz ")))
models = []
for seed in (1, 2):
    torch.manual_seed(seed)
    models.append(build_model(LMConfig("lstm", 28, 256, 2)))
i = 0
while True:
    save_bundle(Path(sys.argv[1]), models[i % 2], tok, metrics={"seed": 1 + i % 2})
    if i == 0:
        print("saved", flush=True)
    i += 1
"""


@pytest.mark.system
def test_kill_9_at_any_moment_of_a_save_leaves_a_loadable_bundle(tmp_path: Path) -> None:
    import random
    import subprocess
    import sys

    path = tmp_path / "target"
    seen = set()
    rng = random.Random(0)
    for _ in range(int(os.environ.get("RNNLM_KILL_ROUNDS", "5"))):  # .ci/run asks for more
        saver = subprocess.Popen(
            [sys.executable, "-c", SAVER, str(path)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        # Wait for one whole save, then kill at a random moment of the saves that follow:
        # the delay picks the moment (what the test is about), it synchronises nothing.
        assert saver.stdout is not None and saver.stdout.readline() == "saved\n"
        time.sleep(rng.uniform(0.0, 0.5))
        saver.kill()  # SIGKILL: no cleanup of any kind
        saver.wait()
        bundle = load_bundle(path)  # never half-written
        seen.add(bundle.metrics["seed"])
    assert seen <= {1, 2}


def test_optional_curves_are_hashed_and_checked(tmp_path: Path, char_tokenizer: Tokenizer) -> None:
    path = tmp_path / "with-curves"
    save_bundle(path, tiny_lm("gru"), char_tokenizer, extra_files={"curves.png": b"\x89PNG..."})
    assert "curves.png" in load_bundle(path).config["files"]
    (path / "curves.png").write_bytes(b"\x89PNG altered")
    with pytest.raises(BundleError, match=r"curves\.png does not match its sha256"):
        load_bundle(path)


def test_only_known_optional_files_are_saved(tmp_path: Path, char_tokenizer: Tokenizer) -> None:
    with pytest.raises(BundleError, match="unknown optional files"):
        save_bundle(tmp_path / "x", tiny_lm("gru"), char_tokenizer, extra_files={"run.py": b""})
    assert not (tmp_path / "x").exists()


def test_a_bundle_records_its_rule_and_old_bundles_read_as_book(tmp_path: Path) -> None:
    byte = Tokenizer(Vocab.of_bytes(), level="byte", normalize="none")
    save_bundle(tmp_path / "bytes", tiny_lm("gru", vocab_size=256), byte)
    loaded = load_bundle(tmp_path / "bytes")
    assert loaded.kind == "byte-lm" and loaded.tokenizer == byte
    assert loaded.config["tokenizer"] == {
        "normalize": "none",
        "level": "byte",
        "line_join": "space",
    }
    raw = Tokenizer(Vocab.build(list("Ab.\n")), level="char", normalize="none")
    save_bundle(tmp_path / "raw", tiny_lm("gru", vocab_size=5), raw)
    assert load_bundle(tmp_path / "raw").tokenizer == raw
    for committed in ("char-lstm", "char-rnn-scratch"):  # written before `normalize`
        config = read_config(ROOT / "checkpoints" / committed)
        assert config["tokenizer"] == {
            "cleanup": "d2l-letters",
            "level": "char",
            "line_join": "space",
        }
        tokenizer = load_bundle(ROOT / "checkpoints" / committed).tokenizer
        assert tokenizer is not None and tokenizer.normalize == "book"


def test_a_forecaster_whose_recorded_fit_is_no_sine_config_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "sine"
    sine = {"T": 1000, "tau": 4, "num_train": 600, "extra": 1}
    save_bundle(path, Forecaster(ForecasterConfig()), training={"sine": sine})
    with pytest.raises(BundleError, match=r"training\.sine is not a sine config"):
        load_bundle(path)
