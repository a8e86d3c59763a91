"""The run configs and the flags derived from them: one declaration per setting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from models.options import option_of
from training.cli import build_parser, main
from training.config import (
    ConfigError,
    DataConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    environment_defaults,
    setting_names,
)
from training.flags import flags_by_setting, given

CONFIGS = (DataConfig, ModelConfig, OptimConfig)


def test_every_setting_is_declared_once_with_help() -> None:
    names = setting_names(TrainConfig)
    assert len(names) == len(set(names))  # flat names are unique across the configs
    for cls in (*CONFIGS, TrainConfig):
        for f in dataclasses.fields(cls):
            if f.name not in ("data", "model", "optim"):
                assert option_of(f) is not None and option_of(f).help, f.name


def test_build_and_settings_round_trip(tmp_path: Path) -> None:
    config = TrainConfig.build(out=tmp_path / "x", lr=0.5, arch="lstm", val_frac=0.2)
    assert (config.optim.lr, config.model.arch, config.data.val_frac) == (0.5, "lstm", 0.2)
    assert TrainConfig.build(**config.settings()) == config
    assert config.replace(lr=0.1).optim.lr == 0.1
    assert "out" not in config.recorded() and "device" not in config.recorded()
    with pytest.raises(TypeError, match="unknown settings: learning_rate"):
        TrainConfig.build(out=tmp_path / "x", learning_rate=0.1)


def _parse(*flags: str) -> TrainConfig:
    args = build_parser().parse_args(["lm", "--out", "ck/x", *flags])
    return TrainConfig.build(**(environment_defaults() | given(args, TrainConfig)))


def test_the_defaults_of_the_flags_are_the_defaults_of_the_configs() -> None:
    assert _parse() == TrainConfig.build(out=Path("ck/x"), **environment_defaults())


@pytest.mark.parametrize(
    ("setting", "text", "value"),
    [
        ("lr", "0.25", 0.25),
        ("num_layers", "3", 3),
        ("sampling", "sequential", "sequential"),
        ("line_join", "book", "book"),
        ("data_dir", "/data", Path("/data")),
        ("device", "cpu", "cpu"),
    ],
)
def test_each_flag_sets_its_setting(setting: str, text: str, value: object) -> None:
    flag = flags_by_setting(TrainConfig)[setting]
    assert _parse(flag, text).settings()[setting] == value


def test_every_setting_has_a_flag_in_the_help(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["lm", "--help"])
    text = capsys.readouterr().out
    for flag in flags_by_setting(TrainConfig).values():
        assert flag in text
    assert "(default: 50)" in text  # --epochs: the dataclass default, shown


def test_no_download_is_the_negated_flag() -> None:
    assert _parse().data.allow_download is True
    assert _parse("--no-download").data.allow_download is False


def test_the_scratch_rnn_conflict_names_both_flags(tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError) as exc:
        ModelConfig(arch="rnn_scratch", num_layers=2)
    assert exc.value.values == {"arch": "rnn_scratch", "num_layers": 2}
    with pytest.raises(SystemExit) as stop:
        main(["lm", "--out", str(tmp_path / "x"), "--arch", "rnn_scratch", "--dropout", "0.2"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--arch rnn_scratch and --dropout 0.2 conflict" in err


def test_a_bound_is_checked_as_the_flag_is_parsed(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["lm", "--out", str(tmp_path / "x"), "--dropout", "1"])
    assert stop.value.code == 2
    assert "argument --dropout: must be < 1, got 1" in capsys.readouterr().err
