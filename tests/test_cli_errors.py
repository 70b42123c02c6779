"""Bad input on the command line ends in one line on stderr, never a traceback."""

import json

import numpy as np
import pytest

from elign.cli import main
from elign.data.dense import DenseDataset


def _one_line_error(capsys, argv, code=2):
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize("flag", ["--batch-size", "--num", "--steps"])
def test_zero_counts_are_refused_by_the_parser(capsys, flag):
    with pytest.raises(SystemExit) as exc:
        main(["sample", "--out", "x.sdf", flag, "0"])
    assert exc.value.code == 2
    assert f"argument {flag}: must be at least 1, got 0" in capsys.readouterr().err


def test_unknown_device_is_named(capsys, tmp_path):
    err = _one_line_error(
        capsys, ["sample", "--num", "1", "--steps", "2", "--device", "tpu", "--out", str(tmp_path / "x.sdf")]
    )
    assert "'tpu' is not a device" in err
    err = _one_line_error(capsys, ["align", "--device", "tpu", "--out", str(tmp_path / "a")])
    assert "'tpu' is not a device" in err


def test_empty_sdf_is_named(capsys, tmp_path):
    empty = tmp_path / "empty.sdf"
    empty.write_text("")
    assert "empty.sdf is empty" in _one_line_error(capsys, ["evaluate", "--samples", str(empty)])
    assert "empty.sdf is empty" in _one_line_error(capsys, ["score", str(empty), "--mlff", "synthetic"])


def test_element_index_outside_the_decoder_names_the_molecule(capsys, tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(
        path,
        positions=np.zeros((5, 3), np.float32),
        types=np.array([0, 1, 1, 0, 9]),
        n_atoms=np.array([2, 3]),
        decoder=np.array(["H", "C"]),
        properties=np.array(json.dumps([{}, {}])),
    )
    err = _one_line_error(capsys, ["evaluate", "--samples", str(path)])
    assert "molecule 1 has an element index outside its decoder" in err


def test_unknown_alignment_field_is_named(capsys, tmp_path):
    err = _one_line_error(capsys, ["align", "--set", "nosuchfield=3", "--out", str(tmp_path / "a")])
    assert "unknown AlignConfig fields: ['nosuchfield']" in err


def test_corrupt_training_state_on_resume(capsys, tmp_path):
    data = tmp_path / "d.npz"
    DenseDataset.synthetic(64).save(data)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    base = ["pretrain", "--data", str(data), "--out", str(run), "--resume", "--batch-size", "8", "--no-progress"]
    assert "not the config.json of an elign pretraining run" in _one_line_error(capsys, base)
    (run / "config.json").write_text(json.dumps({"hidden": 8, "n_layers": 1, "timesteps": 20, "seed": 0}))
    (run / "state.pt").write_bytes(b"not a checkpoint")
    assert "state.pt is not a readable elign training state" in _one_line_error(capsys, base)


def test_empty_training_file(capsys, tmp_path):
    d = DenseDataset.synthetic(16)
    path = tmp_path / "empty.npz"
    DenseDataset(d.positions[:0], d.types[:0], {"train": d.splits["train"][:0]}, d.info).save(path)
    err = _one_line_error(capsys, ["pretrain", "--data", str(path), "--out", str(tmp_path / "r"), "--no-progress"])
    assert "holds no training molecules" in err


def test_unexpected_errors_are_one_line_too(capsys, monkeypatch, tmp_path):
    import elign.cli

    def broken(args):
        raise RuntimeError("something deep failed")

    parser = elign.cli.build_parser
    monkeypatch.setattr(elign.cli, "build_parser", lambda: _with_func(parser(), broken))
    err = _one_line_error(capsys, ["sample", "--out", str(tmp_path / "x.sdf")], code=1)
    assert err == "error: RuntimeError: something deep failed"
    monkeypatch.setenv("ELIGN_TRACEBACK", "1")
    with pytest.raises(RuntimeError):
        main(["sample", "--out", str(tmp_path / "x.sdf")])


def _with_func(parser, func):
    parser._subparsers._group_actions[0].choices["sample"].set_defaults(func=func)
    return parser


@pytest.fixture
def no_work(monkeypatch):
    """Any sampling or scoring fails the test: an output problem must be found before the work."""
    import elign.diffusion.sampler
    import elign.mlff

    def forbidden(*a, **k):
        raise AssertionError("the work started before the output path was checked")

    monkeypatch.setattr(elign.diffusion.sampler, "sample_molecules", forbidden)
    monkeypatch.setattr(elign.mlff, "load_force_field", forbidden)


def test_unwritable_outputs_are_refused_before_the_work(capsys, tmp_path, no_work):
    sdf = tmp_path / "one.sdf"
    sdf.write_text(WATER_SDF)
    folder = tmp_path / "a_folder"
    folder.mkdir()
    sample = ["sample", "--num", "1", "--steps", "1000"]
    assert "cannot write /proc/x.sdf" in _one_line_error(capsys, [*sample, "--out", "/proc/x.sdf"])
    assert "it is a directory" in _one_line_error(capsys, [*sample, "--out", str(folder)])
    err = _one_line_error(capsys, ["evaluate", "--samples", str(sdf), "--json", "/proc/r.json"])
    assert "cannot write /proc/r.json" in err
    assert "cannot write /proc/s.csv" in _one_line_error(capsys, ["score", str(sdf), "--out", "/proc/s.csv"])
    assert "it is a directory" in _one_line_error(capsys, ["score", str(sdf), "--atoms", str(folder)])
    file = tmp_path / "a_file"
    file.write_text("x")
    err = _one_line_error(capsys, ["evaluate", "--samples", str(sdf), "--out", str(file)])
    assert "it is a file, not a folder" in err


WATER_SDF = """water
  elign

  3  2  0  0  0  0  0  0  0  0999 V2000
    0.0000    0.0000    0.1173 O   0  0  0  0  0  0  0  0  0  0  0  0
    0.0000    0.7572   -0.4692 H   0  0  0  0  0  0  0  0  0  0  0  0
    0.0000   -0.7572   -0.4692 H   0  0  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
  1  3  1  0
M  END
$$$$
"""


SNH4_SDF = """stannane
  elign

  5  4  0  0  0  0  0  0  0  0999 V2000
    0.0000    0.0000    0.0000 Sn  0  0  0  0  0  0  0  0  0  0  0  0
    0.9850    0.9850    0.9850 H   0  0  0  0  0  0  0  0  0  0  0  0
   -0.9850   -0.9850    0.9850 H   0  0  0  0  0  0  0  0  0  0  0  0
   -0.9850    0.9850   -0.9850 H   0  0  0  0  0  0  0  0  0  0  0  0
    0.9850   -0.9850   -0.9850 H   0  0  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
  1  3  1  0
  1  4  1  0
  1  5  1  0
M  END
$$$$
"""


def test_one_unsupported_element_flags_its_molecule_not_the_file(capsys, tmp_path):
    sdf = tmp_path / "mixed.sdf"
    sdf.write_text(WATER_SDF + SNH4_SDF)
    out = tmp_path / "scores.csv"
    assert main(["score", str(sdf), "--mlff", "synthetic", "--out", str(out)]) == 0
    rows = out.read_text().splitlines()
    assert len(rows) == 3
    assert rows[1].split(",")[5] == "1"  # water scored
    assert rows[2].split(",")[5] == "0" and "Sn (Z=50)" in rows[2]  # stannane flagged with its reason
    capsys.readouterr()
    report = tmp_path / "r.json"
    assert main(["evaluate", "--samples", str(sdf), "--no-novelty", "--json", str(report)]) == 0
    r = json.loads(report.read_text())
    assert r["n"] == 2 and r["per_molecule"]["molecule_stable"] == [True, False]  # no valence table for Sn
    bogus = tmp_path / "bogus.npz"  # a symbol that is no element is still the file's error
    np.savez(
        bogus,
        positions=np.zeros((2, 3), np.float32),
        types=np.array([0, 1]),
        n_atoms=np.array([2]),
        decoder=np.array(["H", "Xx"]),
        properties=np.array(json.dumps([{}])),
    )
    err = _one_line_error(capsys, ["evaluate", "--samples", str(bogus), "--no-novelty"])
    assert "['Xx'] are not element symbols" in err


def _config_classes():
    from elign.evaluation.settings import EvaluationSettings
    from elign.mlff.distill_config import DistillConfig, StudentConfig
    from elign.rl.config import AlignConfig
    from elign.training.pretrain import PretrainConfig

    return {
        "pretrain": ([PretrainConfig], {"out_dir": "--out"}),
        "align": ([AlignConfig], {"out_dir": "--out"}),
        "mlff distill": (
            [DistillConfig, StudentConfig],
            {"out_dir": "--out", "progress": "--no-progress", "device": "--device", "student": None},
        ),
        "evaluate": (
            [EvaluationSettings],
            {
                "referees": "--referee",
                "dft_density_fit": "--dft-no-density-fit",
                "progress": "--no-progress",
                **{k: "--" + k for k in ("mlff", "independent", "device", "seed")},  # also used for sampling
            },
        ),
    }


@pytest.mark.parametrize("command", ["pretrain", "align", "mlff distill", "evaluate"])
def test_help_lists_every_config_field_with_its_help(capsys, command):
    from dataclasses import fields

    from elign.configs import config_help

    classes, own = _config_classes()[command]
    with pytest.raises(SystemExit):
        main([*command.split(), "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for cls in classes:
        helps = config_help(cls)
        for f in fields(cls):
            if f.name == "extra" or own.get(f.name, "") is None:
                continue
            flag = own.get(f.name) or f.metadata["cli"].get("flag") or "--" + f.name.replace("_", "-")
            assert flag in text, (command, flag)
            if f.name not in own:  # a generated flag carries the field's help
                assert " ".join(helps[f.name].split())[:40] in text, (command, f.name)


def test_a_config_file_with_an_unknown_key_is_an_error_not_ignored(capsys, tmp_path):
    cfg = tmp_path / "recipe.json"
    cfg.write_text('{"hidden": 32, "hiden_size": 64}')
    err = _one_line_error(capsys, ["pretrain", "--out", str(tmp_path / "run"), "--config", str(cfg), "--show-config"])
    assert "unknown PretrainConfig fields: ['hiden_size']" in err
    cfg.write_text('{"hidden": 32}')
    assert main(["pretrain", "--out", str(tmp_path / "run"), "--config", str(cfg), "--show-config"]) == 0
    shown = capsys.readouterr().out
    assert "hidden = 32" in " ".join(shown.split())


@pytest.mark.parametrize(
    ("command", "config", "flags", "shown"),
    [
        (
            "evaluate",
            {"dft_num": 40, "independent": "none"},
            ["--dft-grid-level", "1"],
            ["dft_num = 40", "dft_grid_level = 1", "independent = None"],
        ),
        (
            "mlff distill",
            {"epochs": 3, "student": {"channels": 8}},
            ["--channels", "12"],
            ["epochs = 3", "channels = 12"],
        ),
    ],
)
def test_every_command_reads_a_config_file_and_flags_win(capsys, tmp_path, command, config, flags, shown):
    import json

    cfg = tmp_path / "settings.json"
    cfg.write_text(json.dumps(config))
    out = ["--out", str(tmp_path / "run")] if command != "evaluate" else []
    assert main([*command.split(), *out, "--config", str(cfg), *flags, "--show-config"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for line in shown:
        assert line in text, (line, text[:400])
    cfg.write_text(json.dumps({**config, "not_a_field": 1}))
    err = _one_line_error(capsys, [*command.split(), *out, "--config", str(cfg), "--show-config"])
    assert "unknown" in err and "not_a_field" in err


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("lr=abc", "AlignConfig.lr='abc' must be float"),
        ("lr=NaN", "AlignConfig.lr=nan must be a finite number"),
        ("group_size=2.5", "AlignConfig.group_size=2.5 must be int"),
        ("iterations=true", "AlignConfig.iterations=True must be int"),
    ],
)
def test_align_settings_of_the_wrong_type_are_named(capsys, tmp_path, setting, message):
    err = _one_line_error(capsys, ["align", "--out", str(tmp_path / "a"), "--set", setting])
    assert message in err


def test_nonsense_numbers_are_refused(capsys, tmp_path):
    data = tmp_path / "d.npz"
    DenseDataset.synthetic(8, seed=0).save(data)
    for flag, value in (("--clip-grad", "-1"), ("--epochs", "-1"), ("--max-minutes", "0")):
        err = _one_line_error(capsys, ["pretrain", "--data", str(data), "--out", str(tmp_path / "p"), flag, value])
        assert flag.lstrip("-").replace("-", "_") in err
    err = _one_line_error(
        capsys,
        ["sample", "--num", "1", "--steps", "2", "--guidance-mlff", "synthetic", "--guidance-scale", "nan",
         "--out", str(tmp_path / "g.sdf")],
    )  # fmt: skip
    assert "guidance_scale=nan must be a finite number" in err and not (tmp_path / "g.sdf").exists()


def test_config_values_are_checked_against_their_fields():
    from elign.configs import config_from_dict
    from elign.rl.config import AlignConfig

    assert config_from_dict(AlignConfig, {"lr": 1, "kl_beta": 0}).lr == 1.0  # an int where a float is asked
    with pytest.raises(ValueError, match="may not be None"):
        config_from_dict(AlignConfig, {"lr": None})
    with pytest.raises(ValueError, match="must be str"):
        config_from_dict(AlignConfig, {"failed_mode": 3})


def test_score_checks_geometry_and_fragments_as_evaluate_does(capsys, tmp_path):
    from elign.io.export import write_npz

    d = 1.09 / 3**0.5
    methane = np.array([[0, 0, 0], [d, d, d], [-d, -d, d], [-d, d, -d], [d, -d, -d]])
    molecules = [
        (methane, np.array([1, 0, 0, 0, 0])),  # scored
        (np.array([[0, 0, 0], [0.01, 0, 0]]), np.array([0, 0])),  # H2 at 0.01 A: not a geometry
        (methane * 1e30, np.array([1, 0, 0, 0, 0])),  # CH4 blown apart: five fragments
        (np.array([[0, 0, 0], [0.74, 0, 0], [5.0, 0, 0], [5.74, 0, 0]]), np.array([0, 0, 0, 0])),  # two H2
    ]
    path = tmp_path / "m.npz"
    write_npz(path, molecules, ["H", "C"])
    out = tmp_path / "scores.csv"
    assert main(["score", str(path), "--mlff", "synthetic", "--out", str(out), "--device", "cpu"]) == 0
    rows = [r.split(",") for r in out.read_text().splitlines()[1:]]
    assert [r[5] for r in rows] == ["1", "0", "0", "0"]
    assert "closer than" in rows[1][6] and "fragments" in rows[2][6] and "fragments" in rows[3][6]
    assert rows[1][4] == "" and rows[2][4] == ""  # no number for a molecule that was not scored
    printed = capsys.readouterr().out
    assert "1/4 molecules scored" in printed and "nan" not in printed.lower()


def test_damaged_files_are_one_line_naming_them(capsys, tmp_path):
    """A zero-byte npz, an SDF renamed .npz, EDM args without nf, a checkpoint whose config holds a string
    for a number, and torch's advice to load unsafely: each one line, no traceback."""
    import argparse
    import pickle

    from elign.io.checkpoints import CheckpointError, config_from_edm_args, load_edm_run

    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    assert "empty.npz is not a readable .npz" in _one_line_error(capsys, ["evaluate", "--samples", str(empty)])
    renamed = tmp_path / "renamed.npz"
    renamed.write_text("water\n  RDKit\n\n  0  0  0  0  0  0  0  0  0  0999 V2000\nM  END\n$$$$\n")
    assert "renamed.npz is not a readable .npz" in _one_line_error(capsys, ["score", str(renamed)])
    with pytest.raises(CheckpointError, match="lacks 'nf'"):
        config_from_edm_args(argparse.Namespace(n_layers=2, diffusion_steps=10))
    run = tmp_path / "edm"
    run.mkdir()
    args = {"nf": 8, "n_layers": 1, "attention": True, "tanh": True, "diffusion_steps": 10,
            "diffusion_noise_schedule": "polynomial_2", "dataset": "qm9"}  # fmt: skip
    (run / "args.pickle").write_bytes(pickle.dumps(argparse.Namespace(**args)))
    (run / "generative_model_ema.npy").write_bytes(pickle.dumps(print))  # a pickle that would call code
    with pytest.raises(CheckpointError) as err:
        load_edm_run(run)
    assert "never unpickled in full" in str(err.value) and "weights_only=False" not in str(err.value)


def test_data_checks_the_dense_path_before_any_work(capsys, tmp_path):
    cache = tmp_path / "never-built.npz"
    err = _one_line_error(capsys, ["data", "--cache", str(cache), "--dense", "/proc/dense.npz"])
    assert "/proc/dense.npz" in err and not cache.exists()
