"""The harness: recipes and overrides, resume after a kill, DDP evaluation, records, check,
compare and report, on a small embedded dataset."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from record_files import make_record, write_record_files, write_valid_record

from benchmarks.check import check_records, load_references
from benchmarks.evaluation import metrics_from_confusion
from benchmarks.recipes import RecipeError, apply_overrides, get_recipe
from benchmarks.records import load_records
from benchmarks.report import claims_table, write_report
from benchmarks.resolve import RunPlan, expand_targets
from benchmarks.stats import miou_from_counts, paired_bootstrap, seed_interval, seeds_to_decide

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "iterations=8", "--set", "checkpoint_every=2", "--set", "log_every=1", "--set", "batch_size=4"]


def test_paper_recipes_follow_spec_table():
    # SPEC section 6, restated: (split, batch, lr, momentum, iterations, loss)
    expected = {"fcn32s": ("sbdtrain", 1, 1e-10, 0.99, 100_000, "sum"), "fcn8s": ("sbdtrain", 1, 1e-14, 0.99, 100_000,
                "sum"), "deeplab_v1": ("trainaug", 20, 1e-3, 0.9, 6_000, "mean"),
                "frontend": ("trainaug", 14, 1e-3, 0.9, 60_000, "mean"), "context_large": ("trainaug", 60, 1e-3, 0.9,
                                                                                          40_000, "mean")}
    for method, values in expected.items():
        r = get_recipe(method, "paper")
        assert (r.train_split, r.batch_size, r.lr, r.momentum, r.iterations, r.loss) == values
        assert r.weight_decay == 5e-4 and r.bias_lr_multiplier == 2.0
    deeplab = get_recipe("deeplab_v1", "paper")
    assert (deeplab.crop, deeplab.step_size, deeplab.lr_multipliers, deeplab.loss_on_score_map) == (
        321, 2000, (("fc8", 10.0),), True)
    assert get_recipe("fcn8s", "paper").init_from == "fcn16s"
    assert get_recipe("context_basic", "paper").cached_features


def test_overrides_are_type_checked():
    recipe = get_recipe("deeplab_v1", "quick")
    changed = apply_overrides(recipe, ["lr=0.5", "iterations=7", "crop=none", "flip=false", "scale=0.5,1.5",
                                       "lr_multipliers=fc8:10"])
    assert (changed.lr, changed.iterations, changed.crop, changed.flip, changed.scale) == (0.5, 7, None, False,
                                                                                          (0.5, 1.5))
    assert changed.lr_multipliers == (("fc8", 10.0),)
    for bad in (["nonsense=1"], ["iterations=abc"], ["flip=maybe"], ["lr"], ["method=fcn8s"]):
        with pytest.raises(RecipeError):
            apply_overrides(recipe, bad)
    with pytest.raises(RecipeError, match="no recipe"):
        get_recipe("nope", "quick")


def test_dependencies_resolved_in_order():
    quick = RunPlan(profile="quick", seeds=(0,))
    assert expand_targets(["fcn8s+crf"], quick) == ["fcn32s", "fcn16s", "fcn8s", "fcn8s+crf"]
    assert expand_targets(["context_large"], quick) == ["frontend", "context_large"]


def _cli(args, env, timeout=600):
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _cli_two_processes(args, env):
    """The same command under ``torchrun`` with 2 CPU processes (gloo)."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "benchmarks",
                           *args, "--device", "cpu"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    environment = {**os.environ, "SEGREPRO_CACHE": str(cache), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    environment.pop("SEGREPRO_DATA", None)
    return environment


def test_killed_run_resumes_to_the_same_result(tmp_path, env, monkeypatch):
    base = ["run", "deeplab_v1", *TINY, "--no-report"]
    straight = _cli([*base, "--results", str(tmp_path / "r1"), "--runs", str(tmp_path / "w1")], env)
    assert straight.returncode == 0, straight.stderr
    runs = tmp_path / "w2"
    process = subprocess.Popen([sys.executable, "-m", "benchmarks", *base, "--results", str(tmp_path / "r2"),
                                "--runs", str(runs)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    checkpoints = runs / "quick-embedded" / "deeplab_v1"
    deadline = time.time() + 300
    while not list(checkpoints.glob("seed0-*/checkpoint.pt")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(checkpoints.glob("seed0-*/checkpoint.pt")) and not (tmp_path / "r2" / "records").exists()
    resumed = _cli([*base, "--results", str(tmp_path / "r2"), "--runs", str(runs)], env)
    assert resumed.returncode == 0 and "resuming from iteration" in resumed.stdout, resumed.stdout + resumed.stderr
    first, second = load_records(tmp_path / "r1"), load_records(tmp_path / "r2")
    assert first[0]["metrics"] == second[0]["metrics"]
    (run_dir,) = checkpoints.glob("seed0-*")  # one run folder: the resumed run had the same identity
    assert run_dir.name == f"seed0-{second[0]['run_key']}"
    log = (run_dir / "log.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in log[1:]] == list(range(1, 9))
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))

    # records are not overwritten: a second run reuses it
    again = _cli([*base, "--results", str(tmp_path / "r1"), "--runs", str(tmp_path / "w1")], env)
    assert "exists; reusing it" in again.stdout

    # DDP: two gloo processes score the same weights into the same counts
    torchrun = _cli_two_processes([*base, "--results", str(tmp_path / "r3"), "--runs", str(tmp_path / "w1")], env)
    assert torchrun.returncode == 0, torchrun.stderr[-2000:]
    ddp = load_records(tmp_path / "r3")[0]
    assert ddp["hardware"]["world_size"] == 2 and ddp["metrics"] == first[0]["metrics"]
    one = np.load(Path(first[0]["path"]).with_suffix(".npz"))
    two = np.load(Path(ddp["path"]).with_suffix(".npz"))
    assert np.array_equal(one["counts"], two["counts"]) and list(one["image_ids"]) == list(two["image_ids"])

    # DDP training: two gloo processes train on the same global batches; the evaluation matches
    trained = _cli_two_processes([*base, "--results", str(tmp_path / "r4"), "--runs", str(tmp_path / "w4")], env)
    assert trained.returncode == 0, trained.stderr[-2000:]
    ddp_trained = load_records(tmp_path / "r4")[0]
    assert ddp_trained["metrics"]["pixel_acc"] == pytest.approx(first[0]["metrics"]["pixel_acc"], abs=1e-3)
    assert ddp_trained["metrics"]["miou"] == pytest.approx(first[0]["metrics"]["miou"], abs=2e-3)

    # a diverging run stops with a message and writes no record
    diverged = _cli([*base, "--set", "optimizer=sgd", "--set", "lr=1e12", "--results", str(tmp_path / "r5"),
                     "--runs", str(tmp_path / "w5")], env)
    assert diverged.returncode == 2 and "diverged" in diverged.stderr
    assert not list((tmp_path / "r5").rglob("*.json"))

    # check: embedded records are not comparable; exit 0
    check = _cli(["check", "--results", str(tmp_path / "r1"), "--json"], env)
    assert check.returncode == 0
    verdicts = json.loads(check.stdout)["verdicts"]
    assert verdicts and {v["verdict"] for v in verdicts} == {"not comparable"}
    assert "embedded" in verdicts[0]["reason"]

    # report from the records alone (the overlays find the embedded data in the run's cache)
    monkeypatch.setenv("SEGREPRO_CACHE", env["SEGREPRO_CACHE"])
    written = write_report(tmp_path / "r1", tmp_path / "reports", tmp_path / "w1")
    text = (tmp_path / "reports" / "report.md").read_text()
    assert "Not comparable to the papers" in text and any(p.suffix == ".csv" for p in written)
    assert (tmp_path / "reports" / "quick-embedded-training-curves.png").is_file()
    assert (tmp_path / "reports" / "quick-embedded-qualitative.png").is_file() and "Effective receptive" in text

    # a record whose weights are not under this runs/ (e.g. shipped): the network is trained here; bit-identical
    # weights keep the record, other weights replace it (the old one kept)
    shipped = [*base, "--results", str(tmp_path / "r1"), "--runs", str(tmp_path / "fresh")]
    retrained = _cli(shipped, env)
    assert retrained.returncode == 0 and "exists; reusing it" in retrained.stdout, retrained.stdout
    (record_file,) = (tmp_path / "r1" / "records" / "quick-embedded" / "deeplab_v1").glob("seed0-*.json")
    record_file.write_text(json.dumps({**json.loads(record_file.read_text()), "trained_weights_sha256": "0" * 64}))
    replaced = _cli(shipped, env)
    assert replaced.returncode == 0 and "was not produced from" in replaced.stdout
    assert list((tmp_path / "r1").rglob("seed0-*.1.json.superseded"))
    assert load_records(tmp_path / "r1")[0]["metrics"] == first[0]["metrics"]
    # the CRF variant of retrained weights is scored again too, not reused from the old weights
    crf_args = ["run", "deeplab_v1+crf", *TINY, "--no-report", "--results", str(tmp_path / "r6")]
    assert _cli([*crf_args, "--runs", str(tmp_path / "w6")], env).returncode == 0
    rerun = _cli([*crf_args, "--runs", str(tmp_path / "w7")], env)  # retrained bit for bit: same weights
    assert "exists; reusing it" in rerun.stdout, rerun.stdout
    (crf_record,) = (tmp_path / "r6" / "records" / "quick-embedded" / "deeplab_v1+crf").glob("seed0-*.json")
    content = json.loads(crf_record.read_text())
    crf_record.write_text(json.dumps({**content, "trained_weights_sha256": "0" * 64}))  # from other weights
    rescored = _cli([*crf_args, "--runs", str(tmp_path / "w7")], env)
    assert "was not produced from" in rescored.stdout and json.loads(crf_record.read_text())["crf"]


def _record(method, miou, comparable=True, split="val", seed=0):
    return {"method": method, "seed": seed, "path": f"{method}.json", "metrics": {"miou": miou / 100},
            "comparable_to_paper": comparable, "comparable_reason": "synthetic" if not comparable else "ok",
            "dataset": {"split": split}}


def test_check_verdicts():
    references = load_references()
    verdicts = {(v["reference"], v["verdict"]) for v in check_records([_record("deeplab_v1+crf", 67.3)], references)}
    assert ("deeplab_v1_table1a", "reproduced") in verdicts
    assert ("voc2012_test", "not comparable") in verdicts
    below = check_records([_record("deeplab_v1", 55.0)], references)
    assert {v["verdict"] for v in below if v["reference"] == "deeplab_v1_table1a"} == {"below"}
    voc_only = check_records([_record("context_large_coco", 72.1)], references)  # no coco_pretraining condition
    assert {v["verdict"] for v in voc_only if v["reference"] == "yu_koltun_table3"} == {"not comparable"}
    coco = check_records([{**_record("context_large_coco+crfrnn", 73.5), "conditions": {"coco_pretraining": True}}],
                         references)
    assert [(v["reference"], v["verdict"]) for v in coco] == [("yu_koltun_table3", "reproduced")]
    assert {v["verdict"] for v in check_records([_record("fcn8s", 62.7, False)], references)} == {"not comparable"}


def test_fcn_runs_are_graded_against_the_reference_set_of_their_solver():
    """The paper recipe's heavy-momentum solver (fcn.berkeleyvision.org solver.prototxt) against the
    repository's numbers only; a run of the paper's momentum-0.9 solver against CVPR Table 2 only."""
    from benchmarks.resolve import RunPlan, conditions

    references = load_references()
    assert conditions(RunPlan(profile="paper", seeds=(0,)), "fcn8s")["heavy_momentum_solver"]
    assert not conditions(RunPlan(profile="paper", seeds=(0,)), "deeplab_v1")["heavy_momentum_solver"]
    for heavy, graded in ((True, "fcn_reference_repo"), (False, "fcn_cvpr_table2")):
        record = {**_record("fcn8s", 65.5 if heavy else 62.7, split="seg11valid"),
                  "conditions": {"heavy_momentum_solver": heavy}}
        verdicts = {v["reference"]: v for v in check_records([record], references)}
        assert verdicts[graded]["verdict"] == "reproduced"
        [other] = set(verdicts) - {graded, "voc2012_test", "design_note"}
        assert verdicts[other]["verdict"] == "not comparable"
        assert f"heavy_momentum_solver={str(not heavy).lower()}" in verdicts[other]["reason"].lower()


def test_check_command_exit_codes(tmp_path, env):
    path = write_valid_record(tmp_path / "results", "deeplab_v1", 62.0)
    ok = _cli(["check", "--results", str(tmp_path / "results")], env)
    assert ok.returncode == 0 and "reproduced" in ok.stdout
    record, counts = make_record("deeplab_v1", 50.0)
    write_record_files(path, record, counts)
    assert _cli(["check", "--results", str(tmp_path / "results")], env).returncode == 1


def test_bootstrap_and_counts_agree_with_the_confusion_matrix():
    rng = np.random.default_rng(0)
    images, classes = 40, 5
    gt = rng.integers(0, classes, (images, 30))
    pred_a = np.where(rng.random((images, 30)) < 0.8, gt, rng.integers(0, classes, (images, 30)))
    pred_b = np.where(rng.random((images, 30)) < 0.5, gt, rng.integers(0, classes, (images, 30)))

    def counts(pred):
        out = np.zeros((images, 3, classes), np.int64)
        for i in range(images):
            out[i, 0] = np.bincount(gt[i][pred[i] == gt[i]], minlength=classes)
            out[i, 1] = np.bincount(gt[i], minlength=classes)
            out[i, 2] = np.bincount(pred[i], minlength=classes)
        return out

    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (gt.ravel(), pred_a.ravel()), 1)
    assert miou_from_counts(counts(pred_a).sum(0)) == pytest.approx(metrics_from_confusion(confusion)["miou"], 1e-12)
    better = paired_bootstrap(counts(pred_a), counts(pred_b), 500)
    assert better["low"] > 0 and better["low"] < better["difference"] < better["high"]
    same = paired_bootstrap(counts(pred_a), counts(pred_a), 200)
    assert same["low"] == same["high"] == same["difference"] == 0


def test_claims_need_three_seeds_and_an_interval():
    records = [_record("fcn8s", 60 + s, seed=s) for s in range(3)] + [_record("fcn32s", 55 + s, seed=s)
                                                                     for s in range(3)]
    claim = next(c for c in claims_table(records) if c["better"] == "fcn8s" and c["worse"] == "fcn32s")
    assert claim["verdict"] == "held"  # +5 on every seed
    assert claim["mean"] == pytest.approx(5.0) and claim["seeds"] == 3 and claim["seeds to decide"] == 2
    assert seed_interval([1.0, 2.0, 3.0])["low"] == pytest.approx(2.0 - 4.303 * 1.0 / np.sqrt(3), abs=1e-3)
    twelve = [1.0, 3.0] * 6  # sd 1.044; Student's t at 11 degrees of freedom is 2.201 (a table), not 1.96
    assert seed_interval(twelve)["low"] == pytest.approx(2.0 - 2.201 * np.std(twelve, ddof=1) / np.sqrt(12), abs=1e-3)
    # mean 2, sd sqrt 2: the half-width t(n-1) sqrt(2 / n) is 3.51 at 3 seeds, 2.25 at 4, 1.76 at 5
    assert seeds_to_decide([1.0, 3.0]) == 5 and seeds_to_decide([-1.0, -3.0]) == 5
    assert seeds_to_decide([1.0, -1.0]) is None and seeds_to_decide([2.0]) is None
    assert next(c for c in claims_table(records[:1] + records[3:4]) if c["better"] == "fcn8s")["verdict"] == \
        "not enough seeds"
    assert not any("context" in c["better"] for c in claims_table(records))  # neither side run: left out


def test_quick_profile_replaces_dropout_and_paper_keeps_it():
    import dataclasses

    from torch import nn

    from benchmarks.networks import build_model

    quick = build_model(get_recipe("deeplab_v1", "quick"))
    paper_like = build_model(dataclasses.replace(get_recipe("deeplab_v1", "quick"), dropout=None))
    rates = lambda model: [m.p for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]  # noqa: E731
    assert rates(quick) == [0.0, 0.0] and rates(paper_like) == [0.5, 0.5]


def test_paper_recipes_score_with_the_published_procedure_and_quick_ones_on_whole_images():
    from benchmarks.recipes import recipe_methods

    for method in recipe_methods():
        assert get_recipe(method, "paper").published_test and not get_recipe(method, "quick").published_test
    # the basic context module's identity filler noise (fyu/caffe-dilation) only in the paper profile
    assert get_recipe("context_basic", "paper").builder_options == (("noise_std", 0.01),)
    assert get_recipe("context_basic", "quick").builder_options == ()
    assert get_recipe("context_large", "paper").builder_options == ()


def test_paper_basic_context_module_is_the_identity_plus_filler_noise():
    import dataclasses

    from benchmarks.networks import build_model

    recipe = dataclasses.replace(get_recipe("context_basic", "paper"), pretrained=False, width=1 / 16, init_from=None)
    context = build_model(recipe).context
    weights = torch.cat([m.weight.flatten() for m in context.modules() if isinstance(m, torch.nn.Conv2d)])
    exact = build_model(dataclasses.replace(recipe, builder_options=())).context  # the quick profile's
    identity = torch.cat([m.weight.flatten() for m in exact.modules() if isinstance(m, torch.nn.Conv2d)])
    assert set(identity.unique().tolist()) == {0.0, 1.0}  # Eq. 4 exactly
    centre, rest = weights[identity == 1], weights[identity == 0]
    assert torch.equal(centre, torch.ones_like(centre))
    assert abs(rest.std().item() - 0.01) < 0.0005 and abs(rest.mean().item()) < 0.0005


def test_compare_a_new_head_against_a_baseline(tmp_path, env):
    """The README's example head, registered from its own module, against DeepLab on the same data
    and recipe: a paired bootstrap interval over the validation images."""
    environment = {**env, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    result = _cli(["compare", "my_head", "--baseline", "deeplab_v1", "--import", "my_heads", *TINY, "--results",
                   str(tmp_path / "r"), "--runs", str(tmp_path / "w"), "--resamples", "300", "--json"], environment)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout[result.stdout.index("[\n"):])
    assert rows[0]["new"] == "my_head" and rows[0]["baseline"] == "deeplab_v1" and rows[0]["images"] == 100
    assert rows[0]["low"] <= rows[0]["difference"] <= rows[0]["high"]
    assert "95% paired bootstrap CI" in result.stdout
    record = next(r for r in load_records(tmp_path / "r") if r["method"] == "my_head")
    assert record["recipe"]["iterations"] == 8 and "deeplab_v1 recipe" in record["recipe"]["source"]


def test_paper_profile_on_genuine_voc_samples(tmp_path, env, shared_dir):
    """The paper recipe's data path (DeepLab: trainaug, crop 321 with mean/255 padding, labels /8)
    on real VOC images; offline, ImageNet weights are a clear error, and overriding them marks
    the record not comparable."""
    voc = str(shared_dir / "data" / "voc-real-mini")
    args = ["run", "deeplab_v1", "--data", voc, "--results", str(tmp_path / "r"), "--runs", str(tmp_path / "w"),
            "--no-report", "--set", "iterations=2", "--set", "batch_size=2", "--set", "width=0.0625"]
    offline = _cli(args[:-2], {**env, "TORCH_HOME": str(tmp_path / "torch")})  # width 1: ImageNet weights
    assert offline.returncode == 2 and "--set pretrained=false" in offline.stderr
    assert "needs width=1" in _cli(args, env).stderr
    result = _cli([*args, "--set", "pretrained=false"], env)
    assert result.returncode == 0, result.stderr[-2000:]
    record = load_records(tmp_path / "r")[0]
    assert record["profile"] == "paper" and record["dataset"]["name"] == "voc2012"
    assert record["dataset"]["images"] == 76 and record["train_dataset"]["split"] == "trainaug"
    assert record["comparable_to_paper"] is False and "overridden" in record["comparable_reason"]
    # the paper profile scores with the published test procedure: `score` on the run's weights agrees
    assert record["test_protocol"] == "published (deeplab_v1's published_probabilities)"
    [weights] = (tmp_path / "w").rglob("weights.pt")
    scored = _cli(["score", "deeplab_v1", "--weights", str(weights), "--option", "width=0.0625", "--data", voc,
                   "--convention", "torchvision", "--results", str(tmp_path / "s")], env)
    assert scored.returncode == 0, scored.stderr[-2000:]
    [released] = load_records(tmp_path / "s")
    assert released["metrics"]["miou"] == pytest.approx(record["metrics"]["miou"], abs=1e-12)


def test_compare_bad_input_is_a_clear_error(tmp_path, env):
    unknown = _cli(["compare", "no_such_head", "--baseline", "deeplab_v1", "--results", str(tmp_path)], env)
    assert unknown.returncode == 2 and "unknown method 'no_such_head'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    missing = _cli(["compare", "deeplab_v1", "--baseline", "fcn8s", "--data", str(tmp_path / "nowhere")], env)
    assert missing.returncode == 2 and "holds no VOC 2012 tree" in missing.stderr


def test_crf_search_writes_parameters_that_crf_runs_use(tmp_path, env, monkeypatch):
    """DeepLab's protocol on the held-out images: coarse grid then half steps around the best; the
    chosen point is written into the network's record and `run NAME+crf` scores with it. The
    recorded mIoU of the best point is recomputed here with the reference backend."""
    from benchmarks.crf.dense_crf import CRFParams, dense_crf
    from benchmarks.data.datasets import resolve_dataset
    from benchmarks.evaluation import ConfusionMatrix, class_probabilities
    from benchmarks.networks import build_model, load_weights

    dirs = ["--results", str(tmp_path / "r"), "--runs", str(tmp_path / "w")]
    search = _cli(["crf-search", "deeplab_v1", *TINY, *dirs, "--images", "6", "--w1", "3,6", "--theta-alpha",
                   "10,20", "--theta-beta", "5"], env)
    assert search.returncode == 0, search.stderr[-2000:]
    record = next(r for r in load_records(tmp_path / "r") if r["method"] == "deeplab_v1")
    found = record["crf_search"]
    assert found["split"] == "crfholdout" and found["images"] == 6 and found["images_in_training_split"] == 0
    tried = [(e["w1"], e["theta_alpha"], e["theta_beta"]) for e in found["evaluations"]]
    assert set(tried[:4]) == {(3.0, 10.0, 5.0), (6.0, 10.0, 5.0), (3.0, 20.0, 5.0), (6.0, 20.0, 5.0)}
    best = found["best"]
    coarse_best = max(found["evaluations"][:4], key=lambda e: e["miou"])
    fine = {(w1, ta) for w1 in (coarse_best["w1"] - 1.5, coarse_best["w1"], coarse_best["w1"] + 1.5)
            for ta in (coarse_best["theta_alpha"] - 5, coarse_best["theta_alpha"], coarse_best["theta_alpha"] + 5)}
    assert {(w1, ta) for w1, ta, _ in tried[4:]} == fine - {(coarse_best["w1"], coarse_best["theta_alpha"])}
    assert found["miou"] == max(e["miou"] for e in found["evaluations"])
    assert (best["w2"], best["theta_gamma"], best["iterations"]) == (3.0, 3.0, 10)
    no_images = _cli(["crf-search", "deeplab_v1", *TINY, *dirs, "--images", "0"], env)
    assert no_images.returncode == 2 and "argument --images: must be at least 1" in no_images.stderr

    monkeypatch.setenv("SEGREPRO_CACHE", env["SEGREPRO_CACHE"])
    split = resolve_dataset(None).split("crfholdout")
    model = build_model(apply_overrides(get_recipe("deeplab_v1", "quick"), ["pretrained=false"]))
    (weights,) = (tmp_path / "w" / "quick-embedded" / "deeplab_v1").glob("seed0-*/weights.pt")
    model.load_state_dict(load_weights(weights))
    matrix = ConfusionMatrix(21)
    for image_id in split.ids[:6]:
        sample = split[split.ids.index(image_id)]
        image = torch.from_numpy(sample.image).permute(2, 0, 1)
        probs = class_probabilities(model.eval(), image, torch.device("cpu"))
        matrix.update(dense_crf(image, probs, CRFParams(**best), "pydensecrf").argmax(0),
                      torch.from_numpy(sample.label))
    assert matrix.metrics()["miou"] == pytest.approx(found["miou"], abs=2e-3)

    scored = _cli(["run", "deeplab_v1+crf", *TINY, *dirs, "--no-report"], env)
    assert scored.returncode == 0, scored.stderr[-2000:]
    crf_record = next(r for r in load_records(tmp_path / "r") if r["method"] == "deeplab_v1+crf")
    assert crf_record["crf"] == best and crf_record["crf_source"].startswith("crf-search on 6 crfholdout images")
    assert crf_record["crf_backend"] == "pydensecrf"
    write_report(tmp_path / "r", tmp_path / "reports", tmp_path / "w")
    text = (tmp_path / "reports" / "report.md").read_text()
    settings = text[text.index("### Dense-CRF settings"):text.index("### Per-class IoU")]
    assert "deeplab_v1+crf" in settings and "crf-search on 6 crfholdout images" in settings
    assert f"w1 {best['w1']:g}, theta_alpha {best['theta_alpha']:g}" in settings


def test_records_call_the_code_dirty_only_for_changes_outside_the_outputs(tmp_path, monkeypatch):
    """A run rewrites tracked results/ and reports/ files; that must not mark its records dirty."""
    from benchmarks import records

    def git(*args):
        subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a.json").write_text("1")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "c")
    monkeypatch.setattr(records, "REPOSITORY", tmp_path)
    assert records.git_commit()["dirty"] is False
    (tmp_path / "results" / "a.json").write_text("2")
    assert records.git_commit()["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert records.git_commit()["dirty"] is True
