"""``python -m benchmarks``: the segrepro command line (SPEC section 8)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

import methods

if TYPE_CHECKING:
    from benchmarks.data.datasets import DatasetSource
    from benchmarks.run import RunPlan


class UsageError(Exception):
    """A command line that cannot be carried out as given; the message says what to pass instead."""


def expected_errors() -> tuple[type[Exception], ...]:
    """The failures a user causes and fixes (arguments, data, recipes, files, a diverging run,
    offline weights): ``main`` prints them as one line and exits 2. Anything else is a bug and
    raises with its traceback. ``ValueError`` is here because the harness raises it for invalid
    inputs (``--set`` values, label maps); imported lazily to keep ``list`` and ``rf`` quick."""
    from benchmarks.data.voc import DataError
    from benchmarks.files import DamagedFile
    from benchmarks.launch import LaunchError
    from benchmarks.networks import RunLocked
    from benchmarks.recipes import RecipeError
    from benchmarks.records import RecordError, RecordExists
    from benchmarks.sanity import SuspiciousLoss
    from benchmarks.train import TrainingError
    from methods.vgg import WeightsUnavailable

    return (UsageError, DataError, RecipeError, RecordError, TrainingError, WeightsUnavailable, RecordExists, RunLocked,
            DamagedFile, SuspiciousLoss, LaunchError, OSError, ValueError)


def error_message(error: Exception) -> str:
    """The one line ``main`` prints for an expected failure."""
    from methods.vgg import WeightsUnavailable

    if isinstance(error, WeightsUnavailable):
        return (f"{error} From the command line: --set pretrained=false (the run is then marked not comparable to "
                "the papers).")
    if isinstance(error, OSError) and error.filename is not None:  # from the OS: says which file, not what to do
        return f"{error} (check that the path is right and that you may read and write there)"
    return str(error)


def _print_table(rows: list[dict[str, object]], columns: list[str]) -> None:
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))


def cmd_list(args: argparse.Namespace) -> int:
    from benchmarks.catalogue import list_rows

    _import_modules(args.imports)
    rows = list_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, ["name", "kind", "in_run_all", "params", "score_stride", "receptive_field", "what"])
    return 0


def _dilations(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--dilations takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--dilations needs at least one positive integer, got {text!r}")
    return values


def cmd_rf(args: argparse.Namespace) -> int:
    from benchmarks.catalogue import check_design_note
    from benchmarks.receptive_field import stack_table

    rows = stack_table(args.dilations, args.kernel)
    claims = check_design_note()
    if args.json:
        print(json.dumps({"layers": rows, "design_note_claims": claims}, indent=2))
        return 0
    _print_table(rows, ["layer", "kernel", "dilation", "filter_span", "filter_params", "receptive_field"])
    print("\nDesign-note claims, recomputed from the modules (SPEC section 3):")
    for v in claims:
        status = "holds" if v["holds"] else "WRONG"
        print(f"  [{status}] {v['claim']}: claimed {v['claimed']}, computed {v['computed']}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from benchmarks.data.voc import VOC_CLASSES
    from benchmarks.evaluation import evaluate_directories

    result = evaluate_directories(Path(args.pred), Path(args.gt), args.num_classes)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"images {result['images']}  mIoU {100 * result['miou']:.2f}  pixel acc {100 * result['pixel_acc']:.2f}  "
          f"mean acc {100 * result['mean_acc']:.2f}  fwIoU {100 * result['fwiou']:.2f}")
    names = VOC_CLASSES if args.num_classes == len(VOC_CLASSES) else [str(i) for i in range(args.num_classes)]
    for name, iou in zip(names, result["per_class_iou"], strict=True):
        print(f"  {name:<12} {'absent' if iou is None else f'{100 * iou:.2f}'}")
    return 0


def cmd_prepare_data(args: argparse.Namespace) -> int:
    from benchmarks.data.coco import prepare_coco
    from benchmarks.data.embedded import embedded_root
    from benchmarks.data.prepare_data import prepare_data
    from benchmarks.data.voc import resolve_voc_root

    if args.embedded:
        print(f"embedded dataset (generated, not comparable to the papers): {embedded_root()}")
        return 0
    if not (args.sbd or args.coco):
        raise UsageError("pass --sbd PATH (the extracted SBD benchmark.tgz) and/or --coco PATH (the COCO training "
                         "set), or --embedded")
    if args.sbd:
        done = prepare_data(args.data, args.sbd)
        print(f"{done.voc_root}: trainaug {done.trainaug} ids; SegmentationClassAug written from VOC {done.from_voc}, "
              f"from SBD {done.from_sbd}, already there {done.kept}; SegmentationClassSBD (sbdtrain, FCN's labels) "
              f"written {done.fcn_written}, already there {done.fcn_kept}")
    if args.coco:
        coco = prepare_coco(resolve_voc_root(args.data), args.coco)
        print(f"{coco.annotation_file}: coco split {coco.kept} images with a VOC category ({coco.skipped} without, "
              f"skipped); SegmentationClassCOCO written {coco.written}, already there {coco.already_there}")
    return 0


def _import_modules(names: list[str]) -> None:
    """``--import my_heads``: modules whose ``@register`` calls add the user's methods."""
    import importlib
    import traceback

    for name in names:
        if name.endswith(".py") or not all(part.isidentifier() for part in name.split(".")):
            raise UsageError(f"--import takes a module name such as my_heads (the file my_heads.py on PYTHONPATH or in "
                             f"the current folder), not {name!r}")
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name == name:
                raise UsageError(f"--import {name}: no module named {name!r}; put the folder that holds {name}.py on "
                                 "PYTHONPATH (or run from that folder)") from None
            raise UsageError(f"--import {name}: it imports {error.name!r}, which is not installed") from None
        except SystemExit as error:  # would end the command silently, with no record
            raise UsageError(f"--import {name}: the module called sys.exit({error.code!r}) while being imported; a "
                             "module of heads should only define and register them") from None
        except Exception as error:  # the user's module is broken: where, and what
            where = traceback.extract_tb(error.__traceback__)[-1]
            line = error.lineno if isinstance(error, SyntaxError) else where.lineno
            file = error.filename if isinstance(error, SyntaxError) else where.filename
            raise UsageError(f"--import {name} failed at {file}:{line}: {type(error).__name__}: {error}") from None


def _plan(args: argparse.Namespace, profile: str) -> RunPlan:
    from benchmarks.run import RunPlan

    precision = [f"precision={args.precision}"] if getattr(args, "precision", None) not in (None, "fp32") else []
    return RunPlan(profile=profile, seeds=tuple(args.seeds), overrides=(*args.set, *precision),
                   results=Path(args.results),
                   runs=Path(args.runs), workers=args.workers, rerun=getattr(args, "rerun", False),
                   crf_backend=args.crf_backend, eval_batch=args.eval_batch,
                   allow_overlap=args.allow_train_eval_overlap, sanity_gate=not args.no_sanity_gate)


def _profile(args: argparse.Namespace) -> str:
    return args.profile or ("paper" if (args.data or os.environ.get("SEGREPRO_DATA")) else "quick")


def _writable_folder(path: Path, option: str) -> None:
    """Create ``path`` if missing and write a probe file into it (a read-only mount fails even as root)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise UsageError(f"{option} {path} is not a folder you can write to ({error.strerror}); pass another "
                         f"{option}") from None


def _check_outputs(args: argparse.Namespace, reports: bool = False) -> None:
    """Before any work (training, generating data): the output folders are writable and every
    record under ``--results`` reads, rather than failing when the first record or report is written."""
    from benchmarks.records import load_records

    folders = {"--results": args.results, "--runs": args.runs, **({"--reports": args.reports} if reports else {})}
    for option, folder in folders.items():
        _writable_folder(Path(folder), option)
    load_records(Path(args.results))


def _dataset(data: str | None) -> DatasetSource:
    """``--data``, else the embedded dataset, generated into the cache on first use."""
    from benchmarks.data.datasets import resolve_dataset
    from benchmarks.data.embedded import CACHE_ENV_VAR, default_cache_dir

    try:
        return resolve_dataset(data)
    except OSError as error:  # only generating the embedded dataset writes
        raise UsageError(f"cannot write the embedded dataset into {default_cache_dir()} ({error.strerror}: "
                         f"{error.filename}); point ${CACHE_ENV_VAR} at a folder you can write to") from None


def cmd_run(args: argparse.Namespace) -> int:
    from benchmarks import preemption
    from benchmarks.distributed import Distributed
    from benchmarks.run import main_command_targets, run

    _import_modules(args.imports)
    if args.all and args.methods:
        raise UsageError(f"pass either --all or method names, not both (got --all and {' '.join(args.methods)})")
    if args.all:
        targets = main_command_targets()
    elif args.methods:
        targets = args.methods
    else:
        raise UsageError("name methods to run, or pass --all")
    if args.gpus and torch.cuda.device_count() < args.gpus:
        raise UsageError(f"--gpus {args.gpus}: this machine has {torch.cuda.device_count()} CUDA device(s); pass "
                         "--gpus N with N at most that, or run on the CPU with --launcher local --jobs K")
    if args.plan:
        return _print_plan(targets, args)
    _check_outputs(args, reports=not args.no_report)
    if args.launcher or args.gpus:
        from benchmarks.launch import launch

        launch(targets, args, _plan(args, _profile(args)), _dataset(args.data))
        if args.launcher != "slurm" and not args.no_report:
            _write_report(args)
        return 0
    dist_info = Distributed.from_environment(args.device)
    with preemption.handled():
        source = _dataset(args.data)
        if not source.comparable_to_paper and dist_info.is_main:
            print("NOTE: no VOC data given (--data / $SEGREPRO_DATA): using the embedded generated dataset at "
                  f"{source.root}. Its numbers are NOT comparable to the papers.", file=sys.stderr)
        run(targets, source, _plan(args, _profile(args)), dist_info,
            progress=print if dist_info.is_main else (lambda _: None), stage=args.stage)
    if dist_info.is_main and not args.no_report:
        _write_report(args)
    return 0


def _print_plan(targets: list[str], args: argparse.Namespace) -> int:
    """``run --plan [--json]``: the stages, in order; exit 2 (one ``error:`` line each) when inputs are missing."""
    from benchmarks.launch import stage_dependencies
    from benchmarks.plan import PlanIncomplete, check_plan
    from benchmarks.run import command_plan, expand_targets

    plan = _plan(args, _profile(args))
    stages = command_plan(targets, _dataset(args.data), plan, int(os.environ.get("WORLD_SIZE", "1")))
    after = stage_dependencies(expand_targets(targets, plan), plan)  # of each seed (benchmarks.launch)
    try:
        check_plan(stages, plan.runs)
        problems = []
    except PlanIncomplete as error:
        problems = str(error).splitlines()
    if args.json:
        print(json.dumps({"profile": plan.profile, "seeds": list(plan.seeds),
                          "stages": [{**dataclasses.asdict(stage), "after": after[stage.target]} for stage in stages],
                          "missing": problems}, indent=1))
    else:
        print(f"profile {plan.profile}, seeds {','.join(map(str, plan.seeds))}; {len(stages)} stages:")
        for number, stage in enumerate(stages, 1):
            flops = "" if stage.tflop_per_step is None else f"; {stage.tflop_per_step:.3g} TFLOP/step" + (
                f", {stage.pflop_total:.3g} PFLOP in all" if stage.pflop_total is not None else "")
            splits = ", ".join(f"{name} {count if count is not None else 'MISSING'}"
                               for name, count in stage.splits.items())
            disk = ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in stage.disk_bytes.items())
            print(f"{number:2d}. {stage.target}: {stage.action}; {stage.iterations} it x batch {stage.batch}, crop "
                  f"{stage.crop or 'none'}{flops}\n    after: {', '.join(after[stage.target]) or 'nothing'}"
                  f"\n    init: {stage.init}\n    data: {splits}"
                  + (f"\n    disk: {disk}" if disk else "") + f"\n    recipe: {stage.recipe_source}")
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return 2 if problems else 0


def cmd_score(args: argparse.Namespace) -> int:
    from benchmarks.convert_caffe import parse_options
    from benchmarks.distributed import Distributed
    from benchmarks.score import score_weights

    _import_modules(args.imports)
    _writable_folder(Path(args.results), "--results")
    if args.save_predictions:
        _writable_folder(Path(args.save_predictions), "--save-predictions")
    dist_info = Distributed.from_environment(args.device)
    score_weights(args.method, Path(args.weights), _dataset(args.data), split=args.split, crf=args.crf,
                  results=Path(args.results), dist_info=dist_info, options=parse_options(args.option),
                  convention=args.convention,
                  conditions=dict(args.condition), crf_backend=args.crf_backend, eval_batch=args.eval_batch,
                  save_predictions=Path(args.save_predictions) if args.save_predictions else None,
                  progress=print if dist_info.is_main else (lambda _: None))
    return 0


def _condition(text: str) -> tuple[str, bool]:
    key, _, value = text.partition("=")
    if not key or value.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected NAME=true or NAME=false (e.g. coco_pretraining=true), got {text!r}")
    return key, value.lower() == "true"


def cmd_crf_search(args: argparse.Namespace) -> int:
    from benchmarks.crf_search import SEARCHED, search_method
    from benchmarks.distributed import Distributed

    _import_modules(args.imports)
    _check_outputs(args)
    dist_info = Distributed.from_environment(args.device)
    if dist_info.world_size > 1:
        raise UsageError("crf-search runs in one process (it is a loop over a small grid); launch it without torchrun")
    source = _dataset(args.data)
    grid = {name: values for name in SEARCHED if (values := getattr(args, name)) is not None}
    for found in search_method(args.method, source, _plan(args, _profile(args)), dist_info, split_name=args.split,
                               images=args.images, grid=grid, backend=args.crf_backend):
        best = found.result.best
        print(f"{args.method} seed {found.seed}: w1={best.w1:g} theta_alpha={best.theta_alpha:g} "
              f"theta_beta={best.theta_beta:g} (mIoU {100 * found.result.best_miou:.2f} on {found.images} "
              f"{args.split} images, {found.in_training} of them in the training split) -> {found.record}; "
              f"`run {args.method}+crf` uses them")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from benchmarks.bench.methods import SIZES, run_bench
    from benchmarks.recipes import CRF_STAGE_METHODS, recipe_methods

    unknown = [name for name in args.methods or [] if name not in recipe_methods()]
    if unknown:
        raise UsageError(f"bench --methods: no recipe for {', '.join(unknown)}; methods with recipes: "
                         f"{', '.join(recipe_methods())}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    size = SIZES[args.size or ("paper" if device.type == "cuda" else "reduced")]
    steps = args.steps or (10 if device.type == "cuda" else 2)
    eval_images = args.eval_images or (50 if device.type == "cuda" else 4)
    eval_batch = args.eval_batch or (8 if device.type == "cuda" else 1)
    result = run_bench(args.methods, size, device, steps, eval_images, CRF_STAGE_METHODS, eval_batch,
                       progress=lambda line: print(line, file=sys.stderr))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    peak = result["bf16_matmul_peak_tflops"]
    print(f"device {result['device']}, torch {result['torch']}, {result['date']}, size {size.name} "
          f"(images x{size.image_scale:g}, width {size.width:g}"
          f"{f', batch <= {size.max_batch}' if size.max_batch else ''}); bf16 matmul peak "
          f"{f'{peak:.0f} TFLOP/s' if peak else 'n/a (CPU)'}")
    print("| method | batch | input | train img/s | GFLOP/step | TFLOP/s | of peak | eval 1,449 (s) | CRF ms/img |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        fraction = f"{100 * r['fraction_of_peak']:.0f}%" if r["fraction_of_peak"] else "n/a"
        crf = f"{r['crf_ms_per_image']:.1f}" if "crf_ms_per_image" in r else ""
        print(f"| {r['method']} | {r['batch']} | {'x'.join(map(str, r['input']))} | {r['train_images_per_s']:.1f} | "
              f"{r['train_gflop_per_step']:.1f} | {r['train_tflops']:.3f} | {fraction} | {r['eval_s_1449']:.1f} | "
              f"{crf} |")
    if "projected_paper_profile_hours" in result:
        print(f"projected paper profile (all methods, their recipes' iterations, scoring, +crf): "
              f"{result['projected_paper_profile_hours']:.2f} h")
    if size.name != "paper":
        print("(reduced size: these figures are not the paper-size speed)")
    return 0


def _write_report(args: argparse.Namespace) -> None:
    from benchmarks.report import write_report

    for path in write_report(Path(args.results), Path(args.reports), Path(args.runs),
                             warn=lambda line: print(line, file=sys.stderr)):
        print(f"wrote {path}")


def cmd_report(args: argparse.Namespace) -> int:
    _write_report(args)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from benchmarks.check import check_records, load_references, summary_line
    from benchmarks.records import load_records

    records = load_records(Path(args.results))
    if not records:
        raise UsageError(f"no records under {Path(args.results) / 'records'}; run `python -m benchmarks run` first, "
                         "or pass --results")
    verdicts = check_records(records, load_references())
    if args.json:
        print(json.dumps({"verdicts": verdicts, "summary": summary_line(verdicts)}, indent=2))
    else:
        for v in verdicts:
            interval = "" if v["low"] is None else f" [{v['low']:6.2f}, {v['high']:6.2f}]"
            print(f"{v['method']:<24} {v['reference']:<20} group {v['group']}  {len(v['seeds'])} seeds  published "
                  f"{v['published']:6.2f}  mean {v['mean']:6.2f}{interval}  {v['verdict']}: {v['reason']}  "
                  f"[weights: {v['weights']}] [{v['software']}]")
        print(summary_line(verdicts))
    failed = [v for v in verdicts if v["verdict"] in ("below", "above") and v["authoritative"]]
    return 1 if failed else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from benchmarks.compare import compare_to_baselines
    from benchmarks.distributed import Distributed

    _import_modules(args.imports)
    if args.new not in methods.list_methods():
        raise UsageError(f"unknown method {args.new!r}; registered methods: {', '.join(methods.list_methods())} "
                         "(register a new head in a module and pass --import MODULE)")
    _check_outputs(args)
    source = _dataset(args.data)
    rows = compare_to_baselines(args.new, args.baseline, source, _plan(args, _profile(args)),
                                Distributed.from_environment(args.device), recipe_from=args.recipe_from,
                                resamples=args.resamples)
    for row in rows:
        print(f"{row['new']} - {row['baseline']} (seed {row['seed']}, {row['images']} images): mIoU difference "
              f"{100 * row['difference']:+.2f} points, 95% paired bootstrap CI "
              f"[{100 * row['low']:+.2f}, {100 * row['high']:+.2f}]")
    if not source.comparable_to_paper:
        print("(embedded dataset: these differences are not comparable to the papers)")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def cmd_caffe_blobs(args: argparse.Namespace) -> int:
    from benchmarks.caffe_blobs import blob_rows

    rows = blob_rows(args.file)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        blobs = "  ".join(f"{'x'.join(map(str, b['shape']))} mean {b['mean']:.6g} std {b['std']:.6g}"
                          for b in row["blobs"])
        print(f"{row['layer']:<20} {row['type']:<16} {blobs}")
    return 0


def cmd_convert_caffe(args: argparse.Namespace) -> int:
    from benchmarks.convert_caffe import convert_caffe, parse_options

    _import_modules(args.imports)
    if args.method not in methods.list_methods():
        raise UsageError(f"unknown method {args.method!r}; registered methods: {', '.join(methods.list_methods())}")
    report = convert_caffe(args.file, args.method, Path(args.out), parse_options(args.option))
    if args.json:
        print(json.dumps({"out": args.out, **dataclasses.asdict(report)}, indent=2))
        return 0
    print(f"{report.summary()} -> {args.out}")
    for name, reason in report.dropped.items():
        print(f"  dropped {name}: {reason}")
    if report.initialised:
        print(f"  not in the source, kept at {args.method}'s initialisation: {', '.join(report.initialised)}")
    return 0


def _add_import_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--import", dest="imports", action="append", default=[], help="module registering new methods")


def _add_run_options(p: argparse.ArgumentParser, crf_backend: str = "pydensecrf") -> None:
    p.add_argument("--data", type=_folder_name,
                   help="folder holding VOCdevkit (default $SEGREPRO_DATA; else the embedded dataset)")
    p.add_argument("--profile", choices=["paper", "quick"], help="default: paper with VOC data, quick without")
    p.add_argument("--device", type=_device, help="cuda, cuda:1, cpu (default: cuda when available)")
    p.add_argument("--seeds", type=_seeds, default=[0], help="e.g. 0,1,2")
    p.add_argument("--workers", type=_nonnegative_int, default=0, help="DataLoader worker processes")
    p.add_argument("--results", default="results")
    p.add_argument("--runs", default="runs", help="checkpoints, weights and logs (not committed)")
    _add_import_option(p)
    p.add_argument("--eval-batch", type=_positive_int, default=1, help="images of one size scored together (GPU: 8-16)")
    p.add_argument("--crf-backend", choices=["pydensecrf", "torch"], default=crf_backend,
                   help=f"dense CRF: pydensecrf (the reference) or torch (same lattice, runs on the GPU); "
                        f"default {crf_backend}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    p.add_argument("--precision", choices=["fp32", "tf32", "bf16"],
                   help="arithmetic of training and scoring (default fp32, as the papers trained; tf32 and bf16 "
                        "are the recipe override precision=..., and the record is not comparable)")
    p.add_argument("--allow-train-eval-overlap", action="store_true",
                   help="score on a split that shares images with the training split (the record is not comparable)")
    p.add_argument("--no-sanity-gate", action="store_true",
                   help="train on even when the first loss is far from ln(21) or flat at the first checkpoint")


def _add_launch_options(p: argparse.ArgumentParser) -> None:
    """``run``'s scale-out options (``benchmarks.launch``)."""
    p.add_argument("--stage", help="run only this stage of the command (one node of its graph; what each job runs)")
    p.add_argument("--launcher", choices=["local", "slurm"],
                   help="run the stages as a graph of jobs: on this machine (submitit LocalExecutor) or on SLURM")
    p.add_argument("--jobs", type=_positive_int, default=1, help="with --launcher local: stages run at the same time")
    p.add_argument("--gpus", type=_positive_int, help="CUDA devices to use, one stage each (--per-run K: K each)")
    p.add_argument("--per-run", type=_positive_int, default=1, help="GPUs per stage (torchrun); with --gpus or slurm")
    p.add_argument("--partition", help="--launcher slurm: the partition")
    p.add_argument("--time", type=_positive_int, default=24 * 60, help="--launcher slurm: minutes per job")
    p.add_argument("--nodes", type=_positive_int, default=1, help="--launcher slurm: nodes per run (torchrun)")


def _crf_values(name: str) -> Callable[[str], tuple[float, ...]]:
    """The parser of ``--NAME v1,v2,...``: each value a valid CRF parameter ``name`` (finite, in range)."""
    from benchmarks.crf.dense_crf import CRFParams

    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
            for value in values:
                CRFParams(**{name: value})
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return values

    return parse


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def _nonnegative_int(text: str) -> int:
    return _int_at_least(text, 0)


def _num_classes(text: str) -> int:
    """Class indices 0..N-1 of 8-bit label maps, 255 being ignore: 2 <= N <= 255."""
    value = _int_at_least(text, 2)
    if value > 255:
        raise argparse.ArgumentTypeError(f"must be at most 255 (8-bit labels, 255 = ignore), got {value}")
    return value


def _seeds(text: str) -> list[int]:
    seeds = [_nonnegative_int(v) for v in text.split(",")]
    if max(seeds) >= 2**32:
        raise argparse.ArgumentTypeError(f"seeds must be below 2**32, got {max(seeds)}")
    if len(set(seeds)) < len(seeds):
        raise argparse.ArgumentTypeError(f"names a seed twice: {text!r}")
    return seeds


def _folder_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; name the folder holding VOCdevkit, or leave --data out for the "
                                         "embedded dataset")
    return text


def _kernel(text: str) -> int:
    kernel = _positive_int(text)
    if kernel > 99:
        raise argparse.ArgumentTypeError(f"must be at most 99 (a kernel of {kernel} is not a layer of any method here)")
    return kernel


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"names no method ({text!r}); pass comma-separated method names")
    return names


def _device(text: str) -> str:
    """``--device``, checked before any work: cpu, or a CUDA GPU this process sees."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"the harness runs on cpu or cuda, not {text!r}")
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and (device.index or 0) >= count:
        seen = f"{count} CUDA GPUs (cuda:0 to cuda:{count - 1})" if count else "no CUDA GPU"
        raise argparse.ArgumentTypeError(f"{text}: this machine has {seen}; pass --device cpu or leave it out")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="every runnable target (methods, staged recipes, +crf, +crfrnn, mmseg heads): "
                                    "what it is, parameters, score stride, receptive field")
    p.add_argument("--json", action="store_true")
    _add_import_option(p)
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("rf", help="per-layer receptive fields of a stack of dilated convolutions")
    p.add_argument("--dilations", type=_dilations, required=True, help="e.g. 1,2,4")
    p.add_argument("--kernel", type=_kernel, default=3, help="kernel size, 1..99")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_rf)
    p = sub.add_parser("evaluate", help="score a directory of label PNGs against ground truth (mIoU etc.)")
    p.add_argument("--pred", required=True, help="predicted label PNGs (palette or 8-bit), matched by file stem")
    p.add_argument("--gt", required=True, help="ground-truth label PNGs (255 = ignore)")
    p.add_argument("--num-classes", type=_num_classes, default=21, help="2 to 255 (default 21)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("prepare-data", help="SBD (trainaug split), COCO (coco split) -> VOC labels")
    p.add_argument("--data", type=_folder_name, help="folder holding VOCdevkit (default $SEGREPRO_DATA)")
    p.add_argument("--sbd", help="the extracted SBD archive (benchmark_RELEASE or its dataset folder)")
    p.add_argument("--coco", help="the COCO folder holding annotations/instances_train2014.json and train2014/ "
                                  "(or the 2017 names): the coco split of the *_coco recipes")
    p.add_argument("--embedded", action="store_true", help="generate the embedded dataset into the cache and say where")
    p.set_defaults(func=cmd_prepare_data)
    p = sub.add_parser("run", help="train and evaluate methods; one record per run under results/")
    p.add_argument("methods", nargs="*", help="method names, NAME+crf for the CRF variant, NAME+crfrnn for CRF-RNN")
    p.add_argument("--all", action="store_true", help="every method with a recipe and every +crf and +crfrnn variant")
    _add_run_options(p)
    p.add_argument("--rerun", action="store_true", help="train and score again, replacing existing records")
    p.add_argument("--reports", default="reports")
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--plan", action="store_true", help="print every stage in order with what it needs (weights, "
                                                       "splits, FLOPs, disk) and what is missing; train nothing")
    p.add_argument("--json", action="store_true", help="with --plan: the plan as JSON")
    _add_launch_options(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("score", help="evaluate given weights (e.g. a converted released model) with the method's "
                                     "published test procedure; writes a record under the `released` profile")
    p.add_argument("method", help="the registered method the weights belong to")
    p.add_argument("--weights", required=True, help="a state dict of the method (convert-caffe writes one)")
    p.add_argument("--data", type=_folder_name, help="folder holding VOCdevkit (default: the embedded dataset)")
    p.add_argument("--split", default="val", help="e.g. val, seg11valid (FCN's released models), test (no labels)")
    p.add_argument("--save-predictions", metavar="OUT",
                   help="also write each image's labels as a palette PNG under "
                        "OUT/results/VOC2012/Segmentation/comp6_test_cls/ (the VOC server's layout)")
    p.add_argument("--crf", action="store_true", help="add the dense CRF (the paper recipe's parameters): NAME+crf")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="builder option the weights were made with (width=0.0625, at_once=true)")
    p.add_argument("--convention", choices=["paper", "torchvision"], default="paper",
                   help="input convention of the weights: paper (Caffe-trained releases) or torchvision")
    p.add_argument("--condition", type=_condition, action="append", default=[], metavar="NAME=true|false",
                   help="how the weights were trained, as a reference needs it (e.g. coco_pretraining=true)")
    p.add_argument("--results", default="results")
    p.add_argument("--device", type=_device, help="cuda, cuda:1, cpu (default: cuda when available)")
    p.add_argument("--eval-batch", type=_positive_int, default=1, help="images of one size scored together")
    p.add_argument("--crf-backend", choices=["pydensecrf", "torch"], default="pydensecrf")
    _add_import_option(p)
    p.set_defaults(func=cmd_score)
    p = sub.add_parser("crf-search", help="DeepLab's CRF parameter search for METHOD; +crf then uses the result")
    p.add_argument("method")
    p.add_argument("--split", default="crfholdout", help="images to search on (default: the held-out list)")
    p.add_argument("--images", type=_positive_int, default=100)
    for name in ("w1", "theta_alpha", "theta_beta"):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=_crf_values(name),
                       help="coarse grid (default: recipe)")
    _add_run_options(p, crf_backend="torch")
    p.set_defaults(func=cmd_crf_search)
    p = sub.add_parser("bench", help="training/evaluation/CRF speed of each paper recipe on synthetic VOC-size data")
    p.add_argument("--methods", type=_names, help="comma-separated (default: every method with a recipe)")
    p.add_argument("--device", type=_device, help="cuda, cpu (default: cuda when available)")
    p.add_argument("--size", choices=["paper", "reduced"], help="default: paper on CUDA, reduced on the CPU")
    p.add_argument("--steps", type=_positive_int, help="timed training steps per method (default 10 CUDA / 2 CPU)")
    p.add_argument("--eval-images", type=_positive_int, help="images timed for the 1,449-image figure (default 50 / 4)")
    p.add_argument("--eval-batch", type=_positive_int,
                   help="images per forward pass when scoring (default 8 CUDA / 1 CPU)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("report", help="regenerate tables and reports/report.md from the records")
    p.add_argument("--results", default="results")
    p.add_argument("--reports", default="reports")
    p.add_argument("--runs", default="runs")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("check", help="each method's seeds (per group) against the published numbers (exit 1 if a "
                                     "comparable row missed; "
                                     "2 if there are no records or one does not read)")
    p.add_argument("--results", default="results")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("caffe-blobs", help="each layer of a .caffemodel: name, type, blobs (shape, mean, std)")
    p.add_argument("file", help="a .caffemodel (current or legacy V1 format)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_caffe_blobs)
    p = sub.add_parser("convert-caffe", help="a .caffemodel (or vgg16_from_caffe.pth) as a method's state dict")
    p.add_argument("file", help="a .caffemodel, or pytorch-fcn's vgg16_from_caffe.pth (torchvision layout)")
    p.add_argument("--method", required=True, help="the registered method whose layers the blobs fill")
    p.add_argument("--out", required=True, help="the state dict to write (.pt)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="builder argument, e.g. at_once=true for fcn8s-atonce-pascal, width=0.0625")
    p.add_argument("--json", action="store_true")
    _add_import_option(p)
    p.set_defaults(func=cmd_convert_caffe)
    p = sub.add_parser("compare", help="a new registered head against baselines: paired bootstrap CI of the mIoU gap")
    p.add_argument("new")
    p.add_argument("--baseline", type=_names, required=True, help="comma-separated baseline methods")
    p.add_argument("--recipe-from", help="whose recipe the new head uses (default: the baseline sharing its trunk, "
                                         "staged the same way; printed)")
    p.add_argument("--resamples", type=_positive_int, default=2000)
    p.add_argument("--json", action="store_true")
    _add_run_options(p)
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; an expected failure (``expected_errors``) is ``error: ...`` on stderr and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted: nothing half-written is left; run the same command again to resume from the last "
              "checkpoint", file=sys.stderr)
        return 130
    except Exception as error:
        from benchmarks.preemption import REQUEUE_STATUS, Preempted

        if isinstance(error, Preempted):
            print(f"preempted: {error}; run the same command again (requeue) to resume from there "
                  f"(exit {REQUEUE_STATUS})", file=sys.stderr)
            return REQUEUE_STATUS
        if not isinstance(error, expected_errors()):
            raise
        for line in error_message(error).splitlines():  # a plan's missing inputs: one line each
            print(f"error: {line}", file=sys.stderr)
        return 2
