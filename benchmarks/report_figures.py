"""The report's pictures: per-class IoU and training curves, the context module's receptive
field, and, from the trained seed-0 networks whose weights are here, qualitative overlays and
effective receptive fields (Luo et al. 2016)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.groups import row_label
from benchmarks.resolve import recorded_run_folder

__all__ = ["effective_fields", "pictures", "receptive_field_figure"]


def _save_figure(path: Path) -> str:
    """Save and close the current matplotlib figure; its file name, for the Markdown link."""
    import matplotlib.pyplot as plt

    plt.tight_layout()
    plt.savefig(path, dpi=80)
    plt.close()
    return path.name


def _figures(records: list[dict[str, object]], per_class: pd.DataFrame, out: Path, runs: Path, stem: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    axes = per_class.plot.bar(figsize=(14, 4), width=0.85)
    axes.set_ylabel("IoU (%)")
    axes.set_title("Per-class IoU (mean over seeds)")
    axes.legend(fontsize=7, ncol=4)
    made.append(_save_figure(out / f"{stem}-per-class-iou.png"))

    logs = {(row_label(r), r["seed"]): log for r in records if r["method"] == r["base_method"]
            and (folder := recorded_run_folder(runs, r)) is not None and (log := folder / "log.csv").is_file()}
    if logs:
        _figure, axes = plt.subplots(figsize=(8, 4))
        for (label, seed), log in sorted(logs.items()):
            with log.open() as file:
                rows = list(csv.DictReader(file))
            if rows:
                axes.plot([int(r["iteration"]) for r in rows], [float(r["loss"]) for r in rows],
                          label=f"{label} seed{seed}", linewidth=0.8)
        axes.set_xlabel("iteration")
        axes.set_ylabel("training loss")
        axes.legend(fontsize=6, ncol=3)
        made.append(_save_figure(out / f"{stem}-training-curves.png"))
    return made


def receptive_field_figure(out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.receptive_field import stack_table
    from methods.dilation import CONTEXT_DILATIONS

    rows = stack_table(list(CONTEXT_DILATIONS), 3)
    _figure, axes = plt.subplots(figsize=(6, 3))
    axes.plot([r["layer"] for r in rows], [r["receptive_field"] for r in rows], marker="o")
    axes.set_xlabel("context-module layer")
    axes.set_ylabel("receptive field (score-map units)")
    axes.set_title(f"Context module, dilations {list(CONTEXT_DILATIONS)}")
    return _save_figure(out / "receptive-field-context.png")


Samples = list[tuple[torch.Tensor, torch.Tensor]]


def _trained_networks(group: list[dict[str, object]], runs: Path, images: int,
                      skipped: list[tuple[str, str]]) -> Iterator[tuple[str, torch.nn.Module, Samples]]:
    """(table row, network with its seed-0 weights, the first ``images`` evaluation (image, label)
    pairs) for every network of ``group`` whose weights under ``runs`` are the ones its record
    scored and whose dataset can still be had; why a network is left out goes to ``skipped``."""
    from benchmarks.data.datasets import SegmentationDataset, source_from_facts
    from benchmarks.data.voc import DataError
    from benchmarks.files import file_sha256
    from benchmarks.networks import build_trained
    from benchmarks.recipes import recipe_from_record

    records = {row_label(r): r for r in group if r["seed"] == 0 and r["method"] == r["base_method"]}
    for label, record in sorted(records.items()):
        folder = recorded_run_folder(runs, record)
        weights = folder / "weights.pt" if folder is not None else None
        if weights is None or not weights.is_file():
            skipped.append((label, "no seed-0 weights under the runs folder (records produced elsewhere: `run` "
                                    "them here to draw them)"))
            continue
        if file_sha256(weights) != record["trained_weights_sha256"]:
            skipped.append((label, "the weights under the runs folder are not the ones the record scored"))
            continue
        try:
            source = source_from_facts(record["dataset"])
        except DataError as error:
            skipped.append((label, f"the evaluation images cannot be had: {error}"))
            continue
        try:
            model = build_trained(recipe_from_record(record["recipe"]), weights)
        except KeyError as error:  # a user's method whose module was not imported
            skipped.append((label, f"{error.args[0]} (pass --import MODULE)"))
            continue
        model.eval()
        split = SegmentationDataset(source.split(record["dataset"]["split"]))
        yield label, model, [split[i][:2] for i in range(min(images, len(split)))]


def effective_fields(group: list[dict[str, object]], runs: Path, images: int = 8,
                     skipped: list[tuple[str, str]] | None = None) -> pd.DataFrame:
    """Effective receptive field of each trained network (seed 0) at the centre of the lower half
    of those of the first ``images`` evaluation images that share the first image's size."""
    from benchmarks.receptive_field import effective_receptive_field

    rows = []
    for method, model, samples in _trained_networks(group, runs, images, [] if skipped is None else skipped):
        size = samples[0][0].shape
        batch = torch.stack([image for image, _ in samples if image.shape == size])
        height, width = batch.shape[-2:]
        radii = effective_receptive_field(model, model.input_convention.normalize(batch), 3 * height // 4, width // 2)
        rows.append({"method": method, "50% of gradient (px)": radii[0.5], "90% of gradient (px)": radii[0.9],
                     "unit (row, col)": f"({3 * height // 4}, {width // 2})",
                     "images": f"{len(batch)} of {height}x{width}"})
    return pd.DataFrame(rows)


def _overlays(group: list[dict[str, object]], runs: Path, stem: str, out: Path, skipped: list[tuple[str, str]],
              images: int = 4) -> str | None:
    """Image / ground truth / each trained network's prediction (seed 0) for the first images
    (of any sizes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.data.voc import voc_palette

    palette = voc_palette()
    columns: list[tuple[str, list[np.ndarray]]] = []
    for method, model, samples in _trained_networks(group, runs, images, skipped):
        if not columns:
            columns = [("image", [image.permute(1, 2, 0).numpy() for image, _ in samples]),
                       ("ground truth", [palette[label.numpy()] for _, label in samples])]
        with torch.inference_mode():
            predictions = [model(model.input_convention.normalize(image[None]))[0].argmax(0) for image, _ in samples]
        columns.append((method, [palette[prediction.numpy()] for prediction in predictions]))
    if not columns:
        return None
    count = len(columns[0][1])
    _figure, axes = plt.subplots(count, len(columns), figsize=(1.6 * len(columns), 1.3 * count), squeeze=False)
    for column, (title, pictures) in enumerate(columns):
        for row in range(count):
            axes[row][column].imshow(pictures[row])
            axes[row][column].axis("off")
        axes[0][column].set_title(title, fontsize=7)
    return _save_figure(out / f"{stem}-qualitative.png")


def pictures(group: list[dict], per_class: pd.DataFrame, stem: str, reports: Path, runs: Path) -> list[str]:
    """The group's qualitative results, effective receptive fields and figures (``per_class``: its
    per-class IoU table), as report lines."""
    lines: list[str] = []
    skipped: list[tuple[str, str]] = []
    overlay = _overlays(group, runs, stem, reports, skipped)
    if overlay:
        lines += ["### Qualitative results (seed 0; columns: image, ground truth, each network)", "",
                  f"![qualitative]({overlay})", ""]
    for reason in dict.fromkeys(reason for _, reason in skipped):
        names = ", ".join(method for method, why in skipped if why == reason)
        lines += [f"Qualitative results and effective receptive fields leave out {names}: {reason}.", ""]
    fields = effective_fields(group, runs)
    if not fields.empty:
        lines += ["### Effective receptive fields of the trained networks (Luo et al. 2016)", "",
                  "Half-width of the square centred on one output unit in the object region that holds 50% / "
                  "90% of the input-gradient mass (mean over up to 8 images of one size; reflection padding "
                  "folds gradient back into the image); the scene cue of the embedded dataset lies at least "
                  "`context_distance` px above every object.", "", fields.to_markdown(index=False), ""]
    for figure in _figures(group, per_class, reports, runs, stem):
        lines += [f"![{figure}]({figure})", ""]
    return lines
