"""``python -m benchmarks``: the segrepro command line (SPEC section 8)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

import methods
from benchmarks.receptive_field import analytic_geometry, receptive_field, stack_table

CRF_STAGE_METHODS = ("fcn8s", "deeplab_v1", "frontend", "context_basic", "context_large")
"""Methods the papers also report with dense-CRF post-processing (SPEC section 2): ``NAME+crf``."""

DESIGN_NOTE_CLAIMS = Path(__file__).with_name("design_note_claims.json")


def method_facts(name: str) -> dict[str, object]:
    """What ``list`` reports of one registered method, measured on the built model (width 1,
    on the ``meta`` device: shapes and graph without allocating 134M parameters)."""
    with torch.device("meta"):
        model = methods.create(name)
    return {
        "name": name,
        "paper": methods.get_entry(name).paper,
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "score_stride": model.score_stride,
        "receptive_field": receptive_field(model),
        "score_receptive_field": receptive_field(model, "score_map"),
        "input_convention": model.input_convention.name,
        "paper_input_convention": model.paper_input_convention.name,
        "crf": False,
    }


def list_rows() -> list[dict[str, object]]:
    rows = []
    for name in methods.list_methods():
        facts = method_facts(name)
        rows.append(facts)
        if name in CRF_STAGE_METHODS:
            rows.append({**facts, "name": f"{name}+crf", "crf": True})
    return rows


def check_design_note() -> list[dict[str, object]]:
    """Each claim of the design note, recomputed from the real modules, with a verdict."""
    from methods.dilation import LARGE_MULTIPLIERS, ContextModule

    verdicts = []
    for claim in json.loads(DESIGN_NOTE_CLAIMS.read_text())["claims"]:
        if claim["kind"] == "stack_rf":
            computed: object = stack_table(claim["dilations"], claim["kernel"])[-1]["receptive_field"]
        else:
            module = ContextModule(21, LARGE_MULTIPLIERS, buffer="none")
            kernels = [g.kernel for g in analytic_geometry(module) if g.kind == "Conv2d"]
            computed = [kernels[i - 1] for i in claim["layers"]]
        verdicts.append({"id": claim["id"], "claim": claim["claim"], "claimed": claim["claimed"],
                         "computed": computed, "holds": computed == claim["claimed"]})
    return verdicts


def _print_table(rows: list[dict[str, object]], columns: list[str]) -> None:
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))


def cmd_list(args: argparse.Namespace) -> int:
    rows = list_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, ["name", "params", "score_stride", "receptive_field", "crf", "paper"])
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
    if args.kernel < 1:
        print(f"error: --kernel must be positive, got {args.kernel}", file=sys.stderr)
        return 2
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


def evaluate_directories(pred_dir: Path, gt_dir: Path, num_classes: int = 21) -> dict[str, object]:
    """Score every label PNG of ``gt_dir`` against the prediction of the same file stem in
    ``pred_dir`` with the one evaluator."""
    from benchmarks.evaluation import ConfusionMatrix
    from benchmarks.voc import DataError, read_label

    for folder, what in ((pred_dir, "--pred"), (gt_dir, "--gt")):
        if not folder.is_dir():
            raise DataError(f"{what} {folder} is not a directory")
    gt_files = {p.stem: p for p in sorted(gt_dir.glob("*.png"))}
    pred_files = {p.stem: p for p in sorted(pred_dir.glob("*.png"))}
    if not gt_files:
        raise DataError(f"--gt {gt_dir} holds no .png label maps")
    missing = sorted(set(gt_files) - set(pred_files))
    if missing:
        raise DataError(f"{len(missing)} ground-truth images have no prediction in {pred_dir}, e.g. {missing[:5]} "
                        "(predictions are matched by file stem)")
    confusion = ConfusionMatrix(num_classes)
    for stem, gt_path in gt_files.items():
        target = read_label(gt_path, num_classes)
        prediction = read_label(pred_files[stem], num_classes)
        if prediction.shape != target.shape:
            raise DataError(f"prediction {pred_files[stem]} is {prediction.shape[1]}x{prediction.shape[0]} but "
                            f"{gt_path} is {target.shape[1]}x{target.shape[0]}")
        confusion.update(torch.from_numpy(prediction), torch.from_numpy(target), stem)
    confusion.check_complete(gt_files)
    return {**confusion.metrics(), "images": len(gt_files),
            "unscored_predictions": len(set(pred_files) - set(gt_files))}


def cmd_evaluate(args: argparse.Namespace) -> int:
    from benchmarks.voc import VOC_CLASSES, DataError

    try:
        result = evaluate_directories(Path(args.pred), Path(args.gt), args.num_classes)
    except (DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
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
    from benchmarks.embedded import embedded_root
    from benchmarks.prepare_data import prepare_data
    from benchmarks.voc import DataError

    if args.embedded:
        print(f"embedded dataset (generated, not comparable to the papers): {embedded_root()}")
        return 0
    if not args.sbd:
        print("error: pass --sbd PATH (the extracted SBD benchmark.tgz), or --embedded", file=sys.stderr)
        return 2
    try:
        done = prepare_data(args.data, args.sbd)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{done.voc_root}: trainaug {done.trainaug} ids; SegmentationClassAug written from VOC {done.from_voc}, "
          f"from SBD {done.from_sbd}, already there {done.kept}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="registered methods: paper, parameters, score stride, receptive field, CRF")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("rf", help="per-layer receptive fields of a stack of dilated convolutions")
    p.add_argument("--dilations", type=_dilations, required=True, help="e.g. 1,2,4")
    p.add_argument("--kernel", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_rf)
    p = sub.add_parser("evaluate", help="score a directory of label PNGs against ground truth (mIoU etc.)")
    p.add_argument("--pred", required=True, help="predicted label PNGs (palette or 8-bit), matched by file stem")
    p.add_argument("--gt", required=True, help="ground-truth label PNGs (255 = ignore)")
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("prepare-data", help="convert SBD into SegmentationClassAug and build the trainaug split")
    p.add_argument("--data", help="folder holding VOCdevkit (default $SEGREPRO_DATA)")
    p.add_argument("--sbd", help="the extracted SBD archive (benchmark_RELEASE or its dataset folder)")
    p.add_argument("--embedded", action="store_true", help="generate the embedded dataset into the cache and say where")
    p.set_defaults(func=cmd_prepare_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
