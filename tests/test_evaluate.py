"""Evaluation: statistics with known answers, referee helpers, and `elign evaluate` end to end on CPU."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from elign.evaluation.stats import bootstrap_mean_diff, compare, count_reasons, mann_whitney_better, summarize

has = {m: importlib.util.find_spec(m) is not None for m in ("tblite", "pyscf", "matplotlib", "ase")}

QM9_DECODER = ["H", "C", "N", "O", "F"]
WATER = np.array([[0.0, 0.0, 0.117], [0.0, 0.757, -0.467], [0.0, -0.757, -0.467]])
METHANOL = np.array(
    [[-0.046, 0.663, 0.0], [-0.046, -0.758, 0.0], [-1.086, 0.975, 0.0], [0.438, 1.079, 0.887],
     [0.438, 1.079, -0.887], [0.861, -1.081, 0.0]]
)  # fmt: skip
METHANE = np.array([[0, 0, 0], [0.629, 0.629, 0.629], [-0.629, -0.629, 0.629], [-0.629, 0.629, -0.629],
                    [0.629, -0.629, -0.629]], dtype=float)  # fmt: skip
AMMONIA = np.array([[0, 0, 0.116], [0, 0.939, -0.271], [0.813, -0.470, -0.271], [-0.813, -0.470, -0.271]])
REAL = [(WATER, np.array([3, 0, 0])), (METHANOL, np.array([1, 3, 0, 0, 0, 0])),
        (METHANE, np.array([1, 0, 0, 0, 0])), (AMMONIA, np.array([2, 0, 0, 0]))]  # fmt: skip


# ------------------------------------------------------------------------------------- statistics
def test_summary_known_values_ignores_nan() -> None:
    s = summarize([*range(1, 12), math.nan, None, math.inf])  # 1..11 plus three non-values
    assert s["n"] == 11
    assert s["mean"] == pytest.approx(6.0) and s["median"] == pytest.approx(6.0)
    assert s["p10"] == pytest.approx(2.0) and s["p90"] == pytest.approx(10.0)
    empty = summarize([math.nan])
    assert empty["n"] == 0 and empty["mean"] is None


def test_shifted_distribution_ci_excludes_zero_and_p_small() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(1.0, 0.3, 300)  # e.g. RMS forces of the baseline
    better = rng.normal(0.7, 0.3, 300)  # the second model: lower by 0.3
    r = compare(base, better, better="lower", seed=1)
    assert r["diff"] == pytest.approx(better.mean() - base.mean())
    assert r["ci_high"] < 0 and r["ci_excludes_zero"]
    assert r["ci_low"] < r["diff"] < r["ci_high"]
    assert abs((r["ci_high"] - r["ci_low"]) - 2 * 1.96 * 0.3 * math.sqrt(2 / 300)) < 0.02  # normal-theory width
    assert r["p_value"] < 1e-6
    # the alternative is one-sided: the same data read as 'higher is better' give a p near 1
    assert mann_whitney_better(base, better, better="higher") > 0.99
    # and for a higher-is-better figure, a higher model is the better one
    assert mann_whitney_better(base, better + 0.6, better="higher") < 1e-6


def test_identical_inputs_ci_includes_zero() -> None:
    x = np.random.default_rng(3).normal(0.0, 1.0, 200)
    r = compare(x, x.copy(), better="lower", seed=0)
    assert r["diff"] == 0.0 and r["ci_low"] < 0 < r["ci_high"] and not r["ci_excludes_zero"]
    assert r["p_value"] > 0.4
    same = compare(np.ones(10), np.ones(10))  # all ties: no evidence either way
    assert same["p_value"] == 1.0 and same["ci_low"] == same["ci_high"] == 0.0


def test_bootstrap_is_seeded_and_excludes_nan() -> None:
    a, b = [1.0, 2.0, 3.0, math.nan], [2.0, 3.0, 4.0, math.nan, math.nan]
    assert bootstrap_mean_diff(a, b, seed=5) == bootstrap_mean_diff(a, b, seed=5)
    assert bootstrap_mean_diff(a, b)[0] == pytest.approx(1.0)
    r = compare(a, b)
    assert (r["n_baseline"], r["n_model"]) == (3, 3)
    assert all(math.isnan(v) for v in bootstrap_mean_diff([math.nan], b))
    assert count_reasons(["x", None, "y", "x"]) == {"x": 2, "y": 1}


def test_paired_bootstrap_honours_shared_seeds() -> None:
    # both models see the same seeds: a large seed-to-seed spread, a small model effect (-0.1) on top of it
    rng = np.random.default_rng(0)
    common = rng.normal(2.0, 1.0, 400)  # [n] what the seed decides
    base = common + rng.normal(0.0, 0.05, 400)
    model = common - 0.1 + rng.normal(0.0, 0.05, 400)
    model[::10] = math.nan  # a molecule the referee could not evaluate: excluded on its side only
    unpaired = compare(base, model, seed=2)
    paired = compare(base, model, seed=2, paired=True)
    assert paired["diff"] == unpaired["diff"] == pytest.approx(np.nanmean(model) - np.nanmean(base))
    assert not unpaired["ci_excludes_zero"] and unpaired["ci_low"] < -0.2  # the spread swamps the effect
    assert paired["ci_high"] < 0 and paired["ci_high"] - paired["ci_low"] < 0.1 and paired["paired"]
    # with nothing shared, pairing neither invents nor hides an effect
    x, y = rng.normal(0, 1, 400), rng.normal(0, 1, 400)
    ind, joint = compare(x, y, seed=3), compare(x, y, seed=3, paired=True)
    assert abs((joint["ci_high"] - joint["ci_low"]) - (ind["ci_high"] - ind["ci_low"])) < 0.05
    with pytest.raises(ValueError, match="equal-length"):
        bootstrap_mean_diff([1.0, 2.0], [1.0], paired=True)


def test_comparisons_pair_only_models_sampled_on_the_same_seeds() -> None:
    from elign.data.info import qm9_info
    from elign.evaluation.comparison import shared_seeds
    from elign.evaluation.samples import ModelSamples

    def samples(kind: str, seed: int, sizes: list[int]) -> ModelSamples:
        mols = [(np.zeros((n, 3)), np.zeros(n, np.int64)) for n in sizes]
        return ModelSamples("m", mols, qm9_info(), {"kind": kind, "seed": seed})

    a = samples("checkpoint", 0, [3, 5, 4])
    assert shared_seeds(a, samples("checkpoint", 0, [3, 5, 4]))
    assert shared_seeds(a, samples("guided", 0, [3, 5, 4]))
    assert not shared_seeds(a, samples("checkpoint", 1, [3, 5, 4]))  # another seed
    assert not shared_seeds(a, samples("checkpoint", 0, [3, 4, 5]))  # other sizes
    assert not shared_seeds(a, samples("sdf", 0, [3, 5, 4]))  # read from a file


# ---------------------------------------------------------------------------------------- referees
def test_kabsch_rmsd_and_fragments() -> None:
    from elign.evaluation.referees import kabsch_rmsd, precheck
    from elign.metrics.bonds import n_fragments

    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    assert kabsch_rmsd(METHANOL, METHANOL @ q.T + 3.0) < 1e-9
    moved = METHANOL.copy()
    moved[:, 0] += np.where(np.arange(6) % 2 == 0, 0.1, -0.1)  # not a rigid motion
    assert 0.0 < kabsch_rmsd(METHANOL, moved) <= 0.1 + 1e-9
    t = np.array([3, 0, 0])
    assert n_fragments(WATER, t, QM9_DECODER) == 1
    two = np.concatenate([WATER, WATER + 10.0]), np.concatenate([t, t])
    assert n_fragments(*two, QM9_DECODER) == 2
    assert precheck([8, 1, 1, 8, 1, 1], *two, QM9_DECODER, frozenset({1, 8})) == "disconnected fragments"
    assert "unsupported element" in precheck([8, 1, 1], WATER, t, QM9_DECODER, frozenset({1}))
    assert "odd electron" in precheck([8, 1], WATER[:2], t[:2], QM9_DECODER, frozenset({1, 8}))


def test_referees_and_force_fields_count_a_molecule_under_the_same_reason() -> None:
    """A fragmented radical (water and a distant H atom) is 'disconnected' for every referee of a report."""
    from elign.evaluation.physics import force_field_figures, reason_category
    from elign.evaluation.referees import DFT_ELEMENTS, XTB_ELEMENTS, precheck
    from elign.mlff import load_force_field

    t = np.array([3, 0, 0])
    molecules = [
        (np.concatenate([WATER, [[8.0, 0.0, 0.0]]]), np.array([3, 0, 0, 0])),  # fragments, 11 electrons
        (WATER[:2], t[:2]),
        (WATER, t),
    ]  # OH radical (one fragment, odd), water
    numbers = [[[1, 6, 7, 8, 9][k] for k in types] for _, types in molecules]
    ff = load_force_field("synthetic", closed_shell_only=True)  # flags odd electron counts, as AIMNet2 does
    figures = force_field_figures(ff, molecules, [1, 6, 7, 8, 9], decoder=QM9_DECODER)
    expected = ["disconnected fragments", "odd electron count (open shell)", None]
    assert [reason_category(r) if r else None for r in figures["reason"]] == expected
    for supported in (XTB_ELEMENTS, DFT_ELEMENTS):
        reasons = [precheck(z, x, ty, QM9_DECODER, supported) for z, (x, ty) in zip(numbers, molecules, strict=True)]
        assert [reason_category(r) if r else None for r in reasons] == expected


def test_deadline_pool_kills_slow_tasks_and_reports_errors() -> None:
    from elign.evaluation.referees import DeadlinePool

    with DeadlinePool(time.sleep, n_workers=1, time_limit=2.0) as pool:
        results = {k: (v, err) for k, v, err in pool.imap([0.0, 60.0, -1.0, 0.0])}
    assert results[0] == (None, None) and results[3] == (None, None)  # the worker was replaced after the kill
    assert "time limit exceeded" in results[1][1]
    assert results[2][1].startswith("ValueError")


@pytest.mark.skipif(not (has["tblite"] and has["ase"]), reason="needs tblite and ase")
def test_xtb_relaxations_are_cached_and_resume(tmp_path) -> None:
    from elign.evaluation.referees import xtb_relax_all

    QM9_Z = [1, 6, 7, 8, 9]
    mols = [REAL[0], REAL[2]]
    first = xtb_relax_all(mols, QM9_DECODER, QM9_Z, time_limit=60, max_steps=20, cache_dir=tmp_path / "c")
    assert all(r["reason"] is None for r in first) and len(list((tmp_path / "c").glob("*.json"))) == 2
    # everything comes from the cache: a limit no calculation could meet changes nothing
    again = xtb_relax_all(mols, QM9_DECODER, QM9_Z, time_limit=1e-9, max_steps=20, cache_dir=tmp_path / "c")
    assert again == first
    # other settings are other results: computed again (and here cut off by the limit, which is not cached)
    other = xtb_relax_all(mols, QM9_DECODER, QM9_Z, time_limit=1e-9, max_steps=21, cache_dir=tmp_path / "c")
    assert all("time limit" in r["reason"] for r in other)
    assert len(list((tmp_path / "c").glob("*.json"))) == 2


# ------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    from elign.io.checkpoints import save_checkpoint
    from elign.io.export import write_sdf
    from elign.testing import tiny_model

    folder = tmp_path_factory.mktemp("evaluate_inputs")
    paths = {}
    for seed in (0, 1):
        model, config = tiny_model(seed=seed)
        paths[f"tiny{seed}"] = save_checkpoint(folder / f"tiny{seed}.safetensors", model, config)
    paths["real"] = folder / "real.sdf"
    write_sdf(paths["real"], REAL, QM9_DECODER)
    return paths


def test_a_missing_checkpoint_fails_before_any_model_is_sampled(inputs, tmp_path, monkeypatch) -> None:
    from elign.evaluation import samples
    from elign.io.checkpoints import CheckpointError

    def never(*args, **kwargs):
        raise AssertionError("sampled a model before every checkpoint was checked")

    monkeypatch.setattr(samples, "sample_checkpoint", never)
    with pytest.raises(CheckpointError, match="missing.safetensors"):
        samples.collect_samples([str(inputs["tiny0"]), str(tmp_path / "missing.safetensors")], num=2, steps=2)
    with pytest.raises(FileNotFoundError, match="gone.sdf"):
        samples.collect_samples([str(inputs["tiny0"])], sdf_files=[str(tmp_path / "gone.sdf")], num=2, steps=2)


def test_each_checkpoint_is_loaded_once_for_its_plain_and_guided_rows(inputs, monkeypatch) -> None:
    import elign.io.checkpoints as checkpoints
    from elign.evaluation import samples

    loads = []
    load = checkpoints.load_checkpoint
    monkeypatch.setattr(checkpoints, "load_checkpoint", lambda path, *a, **k: loads.append(path) or load(path, *a, **k))
    tiny = str(inputs["tiny0"])
    rows = samples.collect_samples([tiny], guided=[f"{tiny}:synthetic:0.1"], num=2, steps=2)
    assert [r.name for r in rows] == ["tiny0", "tiny0+guided-synthetic-0.1"]
    assert len(loads) == 1


def test_sampled_molecules_are_kept_and_reused_under_a_key_of_what_decides_them(inputs, tmp_path, monkeypatch) -> None:
    import elign.diffusion.sampler as sampler
    from elign.evaluation import samples

    cache = tmp_path / "samples_cache"
    first = samples.collect_samples([str(inputs["tiny0"])], num=3, steps=3, seed=5, cache_dir=cache)[0]
    assert len(list(cache.glob("*.npz"))) == 1

    def never(*args, **kwargs):
        raise AssertionError("sampled again although the cache holds these molecules")

    monkeypatch.setattr(sampler, "sample_molecules", never)
    again = samples.collect_samples([str(inputs["tiny0"])], num=3, steps=3, seed=5, cache_dir=cache)[0]
    assert again.throughput["cached"] and again.source == first.source
    for (x0, t0), (x1, t1) in zip(first.molecules, again.molecules, strict=True):
        np.testing.assert_array_equal(x0, x1)
        np.testing.assert_array_equal(t0, t1)
    with pytest.raises(AssertionError, match="sampled again"):  # another seed is another key
        samples.collect_samples([str(inputs["tiny0"])], num=3, steps=3, seed=6, cache_dir=cache)


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 cut short", None])
def test_a_damaged_samples_cache_is_sampled_again_and_named(inputs, tmp_path, capsys, damage) -> None:
    from elign.evaluation import samples

    cache = tmp_path / "samples_cache"
    first = samples.collect_samples([str(inputs["tiny0"])], num=3, steps=3, seed=5, cache_dir=cache)[0]
    (path,) = cache.glob("*.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage is None else damage)  # truncated, empty or foreign
    again = samples.collect_samples([str(inputs["tiny0"])], num=3, steps=3, seed=5, cache_dir=cache)[0]
    assert "cached" not in again.throughput and f"{path} is damaged" in capsys.readouterr().err
    for (x0, _), (x1, _) in zip(first.molecules, again.molecules, strict=True):
        np.testing.assert_array_equal(x0, x1)  # the same seed gives the same molecules
    assert samples.collect_samples([str(inputs["tiny0"])], num=3, steps=3, seed=5, cache_dir=cache)[0].throughput[
        "cached"
    ]  # and the file is whole again


@pytest.mark.parametrize(
    "record", ["[]", "{}", '{"energy": NaN, "forces": [[0, 0, 0]]}', '{"energy": 1.0}', "not json"]
)
def test_a_damaged_referee_record_is_computed_again_and_named(tmp_path, capsys, record) -> None:
    from elign.evaluation.referees import DFT_FIELDS, _cache_read

    (tmp_path / "k.json").write_text(record)
    assert _cache_read(tmp_path, "k", DFT_FIELDS) is None
    assert f"{tmp_path / 'k.json'} is damaged" in capsys.readouterr().err
    (tmp_path / "k.json").write_text('{"energy": -40.5, "forces": [[0.1, 0, 0]]}')
    assert _cache_read(tmp_path, "k", DFT_FIELDS)["energy"] == -40.5
    (tmp_path / "k.json").write_text('{"energy": null, "forces": null, "reason": "SCF not converged"}')
    assert _cache_read(tmp_path, "k", DFT_FIELDS)["reason"] == "SCF not converged"  # a failure, kept as one


def test_legacy_single_sdf_chemistry(inputs, tmp_path) -> None:
    from elign.cli import main

    out = tmp_path / "chem.json"
    assert main(["evaluate", "--samples", str(inputs["real"]), "--json", str(out), "--no-novelty"]) == 0
    report = json.loads(out.read_text())
    assert report["n"] == 4 and report["molecule_stability"] == 1.0 and report["validity"] == 1.0
    guards = report["composition"]
    assert guards["n"] == 4 and 0 < guards["atom_type_tv"] <= 1 and guards["heavy_formulas_distinct"] >= 1


@pytest.mark.parametrize(("bad", "message"), [
    (dict(dft_grid_level=10), "dft_grid_level=10"), (dict(dft_grid_level=-1), "dft_grid_level=-1"),
    (dict(dft_conv_tol=0.0), "dft_conv_tol=0.0"), (dict(dft_pool="some"), "dft_pool"), (dict(dft_num=-1), "dft_num"),
    (dict(referees=("xtb", "mp2")), "mp2"),
])  # fmt: skip
def test_evaluation_settings_reject_bad_values(bad, message) -> None:
    from elign.evaluation.settings import EvaluationSettings

    with pytest.raises(ValueError, match=message):
        EvaluationSettings(**bad)


@pytest.mark.skipif(not all(has.values()), reason="needs tblite, ase, pyscf and matplotlib")
def test_evaluate_end_to_end_with_xtb_and_dft(inputs, tmp_path) -> None:
    from elign.cli import main

    out = tmp_path / "report"
    common = [
        "--samples",
        str(inputs["real"]),
        "--num",
        "4",
        "--steps",
        "3",
        "--seed",
        "0",
        "--referee",
        "dft",
        "--dft-num",
        "3",
        "--dft-basis",
        "sto-3g",
        "--dft-no-density-fit",
        "--dft-time-limit",
        "60",
        "--dft-grid-level",
        "1",
        "--dft-conv-tol",
        "1e-7",
        "--no-novelty",
        "--no-progress",
        "--device",
        "cpu",
        "--n-boot",
        "200",
        "--out",
        str(out),
    ]
    argv = [
        "evaluate",
        "--checkpoint",
        str(inputs["tiny0"]),
        "--checkpoint",
        str(inputs["tiny1"]),
        "--mlff",
        "synthetic",
        "--referee",
        "xtb",
        "--relax-steps",
        "30",
        "--xtb-workers",
        "1",
        *common,
    ]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report) >= {"settings", "physics", "models", "comparisons", "metrics", "files"}
    level = report["physics"]["dft"]["level"]  # the level of theory actually run is on record
    assert (level["basis"], level["density_fit"], level["grid_level"], level["conv_tol"]) == ("sto-3g", False, 1, 1e-7)
    names = [m["name"] for m in report["models"]]
    assert names == ["tiny0", "tiny1", "real"]
    # each sampled model's provenance: the checkpoint as named on the command line and its content hash
    for m, key in zip(report["models"][:2], ("tiny0", "tiny1"), strict=True):
        digest = hashlib.sha256(Path(inputs[key]).read_bytes()).hexdigest()
        assert m["source"]["checkpoint"] == str(inputs[key]) and m["source"]["sha256"] == digest
    for m in report["models"]:
        assert m["n"] == 4 and set(m["physics"]) == {"reward", "independent", "xtb", "dft"}
        for g in m["physics"].values():
            assert g["n_evaluated"] + g["n_failed"] == g["n_considered"]
            assert sum(g["failures"].values()) == g["n_failed"]
        # the DFT subsample is drawn from each model's eligible molecules: none is excluded by the precheck
        eligible = report["physics"]["dft"]["eligibility"][m["name"]]
        assert m["physics"]["dft"]["n_considered"] == min(3, eligible["n_eligible"])
        assert eligible["n_eligible"] + sum(eligible["excluded"].values()) == 4
        assert not any(k in m["physics"]["dft"]["failures"] for k in eligible["excluded"])
    # same sizes for every sampled model, and a throughput figure for each
    rows = list(csv.DictReader(open(out / "molecules.csv")))
    assert len(rows) == 12
    sizes = {name: [r["n_atoms"] for r in rows if r["model"] == name] for name in names}
    assert sizes["tiny0"] == sizes["tiny1"]
    assert all(m["throughput"]["molecules_per_second"] > 0 for m in report["models"][:2])
    assert report["models"][2]["throughput"] is None
    # real molecules: every referee evaluates them; DFT at sto-3g gives a negative formation energy
    real = report["models"][2]["physics"]
    assert real["xtb"]["n_evaluated"] == 4 and real["independent"]["n_evaluated"] == 4
    assert real["xtb"]["delta_e_relax"]["median"] >= -1e-6 and real["xtb"]["rmsd"]["n"] == 4
    assert real["dft"]["n_evaluated"] == 3 and real["dft"]["formation_energy"]["mean"] < -1.0
    # untrained tiny models: what a referee cannot evaluate is counted, never scored
    tiny = report["models"][0]["physics"]["xtb"]
    assert tiny["rms_force"]["n"] == tiny["n_evaluated"]
    failed = [r for r in rows if r["model"] == "tiny0" and r["xtb_reason"]]
    assert all(r["xtb_rms_force"] == "" for r in failed)
    # comparisons against the first model, with every metric
    assert [(c["baseline"], c["model"]) for c in report["comparisons"]] == [("tiny0", "tiny1"), ("tiny0", "real")]
    assert {"molecule_stable", "xtb_rms_force", "dft_formation_energy"} <= set(report["comparisons"][1]["metrics"])
    # two checkpoints sampled here share seeds (paired, but not each model's own DFT subsample); a file does not
    sampled, from_file = report["comparisons"][0]["metrics"], report["comparisons"][1]["metrics"]
    assert sampled["xtb_rms_force"]["paired"] and sampled["molecule_stable"]["paired"]
    assert not sampled["dft_formation_energy"]["paired"] and not from_file["xtb_rms_force"]["paired"]
    # files: SDF per model, plots, HTML embedding them
    for name in names:
        assert (out / f"{name}.sdf").stat().st_size > 0
    assert "plots/stability.png" in report["files"]["plots"] and "plots/xtb_rms_force.png" in report["files"]["plots"]
    html = (out / "report.html").read_text()
    assert "Composition against QM9" in html and "atom-type TV" in html and "a QM9 sample" in html
    for plot in report["files"]["plots"]:
        assert (out / plot).read_bytes()[:4] == b"\x89PNG" and f'src="{plot}"' in html
    # an interrupted DFT run resumes from the cache: the same subsample again needs no new calculation
    n_jobs = report["physics"]["dft"]["n_jobs"]
    assert len(list((out / "dft_cache").glob("*.json"))) == n_jobs
    assert main(["evaluate", "--mlff", "none", "--independent", "none", "--no-plots", *common]) == 0
    again = json.loads((out / "report.json").read_text())
    assert again["physics"]["dft"]["n_cached"] == again["physics"]["dft"]["n_jobs"] == n_jobs
    assert again["models"][0]["physics"]["dft"]["formation_energy"] == real["dft"]["formation_energy"]


def test_a_shipped_checkpoint_is_recorded_by_name_and_hash_not_by_this_machines_path() -> None:
    from elign.evaluation.samples import collect_samples
    from elign.io.assets import shipped_backbone

    (row,) = collect_samples(checkpoints=["backbone"], num=2, steps=2, seed=0, batch_size=2)
    assert row.source["checkpoint"] == "backbone"
    assert row.source["sha256"] == hashlib.sha256(shipped_backbone().read_bytes()).hexdigest()


def test_dft_draw_grows_by_prefix_so_a_larger_budget_keeps_the_molecules_already_computed() -> None:
    from elign.evaluation.dft_subsample import dft_draw

    pool = list(range(3, 400, 2))  # [199] eligible molecule indices
    small, large = dft_draw(pool, 10, seed=0), dft_draw(pool, 40, seed=0)
    assert len(small) == 10 and len(large) == 40 and large[:10] == small
    assert set(small) <= set(large) <= set(pool) and small != sorted(small)
    assert dft_draw(pool, 10, seed=0) == small and dft_draw(pool, 10, seed=1) != small
    assert sorted(dft_draw(pool, 500, seed=0)) == pool and dft_draw([], 5, seed=0) == []


def test_models_take_turns_so_a_stopped_dft_run_holds_a_prefix_of_every_models_draw() -> None:
    from elign.evaluation.dft_subsample import take_turns

    order = take_turns([[7, 3, 9], [4, 1], []])
    assert order == [(0, 7), (1, 4), (0, 3), (1, 1), (0, 9)]
    assert take_turns([]) == [] and take_turns([[], []]) == []


def test_an_original_edm_run_directory_is_recorded_with_the_hash_of_the_files_it_is_loaded_from(edm_fixtures):
    from elign.evaluation.samples import collect_samples

    run = edm_fixtures / "edm_qm9_tiny"
    (row,) = collect_samples(checkpoints=[str(run)], num=2, steps=2, seed=0, batch_size=2)
    weights = run / "generative_model_ema.npy"
    assert row.source["checkpoint"] == str(run)
    assert row.source["sha256"] == hashlib.sha256((run / "args.pickle").read_bytes() + weights.read_bytes()).hexdigest()


def test_a_report_of_formulas_samples_their_isomers_and_counts_them(inputs, tmp_path) -> None:
    from elign.evaluation import samples
    from elign.evaluation.chemistry import chemistry_rows
    from elign.evaluation.summary import report_lines

    tiny = str(inputs["tiny0"])
    rows = samples.collect_samples([tiny], num=3, steps=3, seed=2, formulas=["CH4", "H2O"], cache_dir=tmp_path)
    s = rows[0]
    assert len(s.molecules) == 6 and s.source["formulas"] == ["CH4", "H2O"] and s.source["per_formula"] == 3
    assert [sorted(t.tolist()) for _, t in s.molecules] == [[0, 0, 0, 0, 1]] * 3 + [[0, 0, 3]] * 3  # H C / H O
    chem, table = chemistry_rows(s, None)
    assert chem["exact_formula"] == 1.0 and chem["formulas"] == 2
    assert [r["requested_formula"] for r in table] == ["CH4"] * 3 + ["H2O"] * 3
    if chem["isomer_uniqueness"] is not None:  # distinct valid SMILES of a formula: methane has one isomer
        assert 0 < chem["isomer_uniqueness"] <= 1
    again = samples.collect_samples([tiny], num=3, steps=3, seed=2, formulas=["CH4", "H2O"], cache_dir=tmp_path)[0]
    assert again.throughput.get("cached")  # the cache key holds the formulas
    other = samples.collect_samples([tiny], num=3, steps=3, seed=2, formulas=["NH3", "H2O"], cache_dir=tmp_path)[0]
    assert not other.throughput.get("cached")
    report = {"models": [{"name": "tiny0", "n": 6, "throughput": {}, "chemistry": chem, "physics": {}}]}
    assert "2 formulas: exact formula 1.000" in "\n".join(report_lines(report))


def test_an_isomers_energy_is_measured_above_the_lowest_relaxed_isomer_of_its_formula() -> None:
    from elign.evaluation.physics import isomer_energy_columns
    from elign.evaluation.referees import EV_TO_KCAL_MOL

    def row(formula, energy, relax_kcal, reason=None, requested="C2H6O"):
        return {"formula": formula, "requested_formula": requested, "xtb_energy": energy,
                "xtb_delta_e_relax": relax_kcal, "xtb_reason": reason}  # fmt: skip

    backbone = [row("C2H6O", -10.0, 23.060547830619), row("C2H6O", -10.5, 0.0)]  # relaxed: -11.0, -10.5 eV
    aligned = [row("C2H6O", -10.8, 0.0), row("C2H6O", -99.0, 0.0, reason="SCF"), row("CH4", -5.0, 0.0)]
    plain = [{"formula": "CH4", "xtb_energy": -5.0, "xtb_delta_e_relax": 0.0, "xtb_reason": None}]
    assert isomer_energy_columns([backbone, aligned, plain])
    above = [r["xtb_energy_above_minimum"] for r in backbone + aligned]
    expected = [1.0 * EV_TO_KCAL_MOL, 0.5 * EV_TO_KCAL_MOL, 0.2 * EV_TO_KCAL_MOL]
    assert above[:3] == pytest.approx(expected)  # the lowest relaxed isomer is the backbone's first, -11.0 eV
    assert math.isnan(above[3]) and math.isnan(above[4])  # a failed referee, a molecule of another formula
    assert "xtb_energy_above_minimum" not in plain[0]  # no formula was asked for
    assert not isomer_energy_columns([plain])
