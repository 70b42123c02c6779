"""configs.resolve: the one place where defaults, a preset, a file, flags, --set and a resumed run meet."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import pytest

from elign.configs import add_config_arguments, option, read_saved_config, resolve


@dataclass
class Toy:
    lr: float = option(1e-3, "learning rate")
    layers: int = option(2, "blocks")
    widths: tuple[int, ...] = option((8,), "widths")
    name: str = option("toy", "a name")
    out_dir: str = option("", "where")


PRESETS = {"fast": {"lr": 1e-2, "layers": 1}, "wide": {"widths": [64, 64]}}


def _args(*argv: str, presets: bool = True) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--config")
    p.add_argument("--set", nargs="*", default=[])
    if presets:
        p.add_argument("--preset", default="fast")
    add_config_arguments(p, Toy, skip=("out_dir",))
    return p.parse_args(list(argv))


def test_each_layer_overrides_the_ones_before_it(tmp_path) -> None:
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"preset": "wide", "layers": 5, "name": "file"}))
    assert resolve(Toy, _args(), presets=PRESETS) == Toy(lr=1e-2, layers=1)  # the default preset
    got = resolve(Toy, _args("--config", str(file), "--layers", "7"), presets=PRESETS, fixed={"out_dir": "o"})
    # the file's preset replaces --preset's (a file that names none uses none); flags win over the file
    assert got == Toy(lr=1e-3, layers=7, widths=(64, 64), name="file", out_dir="o")
    got = resolve(Toy, _args("--layers", "7", "--set", "layers=9", "name=x", "widths=[1, 2]"), presets=PRESETS)
    assert (got.layers, got.name, got.widths) == (9, "x", (1, 2))  # --set after the flags; JSON lists as tuples
    assert resolve(Toy, _args(presets=False), defaults={"name": "command"}).name == "command"


def test_a_resumed_run_keeps_its_pinned_fields_and_takes_new_ones_elsewhere() -> None:
    saved = {"lr": 5.0, "layers": 3, "name": "saved"}
    got = resolve(Toy, _args("--layers", "9", "--lr", "0.1", presets=False), saved=saved, pinned=("layers",))
    assert (got.layers, got.lr, got.name) == (3, 0.1, "saved")


def test_bad_input_is_an_error_that_names_it(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown preset 'slow'"):
        resolve(Toy, _args("--preset", "slow"), presets=PRESETS)
    with pytest.raises(ValueError, match=r"unknown Toy fields: \['depth'\]"):
        resolve(Toy, _args("--set", "depth=3"), presets=PRESETS)
    with pytest.raises(ValueError, match="Toy.layers='many' must be int"):
        resolve(Toy, _args("--set", "layers=many"), presets=PRESETS)
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"hidden": 3}))
    with pytest.raises(ValueError, match="is not the config.json of a toy run"):
        read_saved_config(bad, "a toy run", ("hidden", "layers"))
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot resume from it"):
        read_saved_config(bad, "a toy run")
