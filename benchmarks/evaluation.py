"""The one evaluator (SPEC section 5), as FCN's ``score.py``: per class c, n_cc (pixels of c
predicted c), t_c (ground-truth pixels of c) and p_c (pixels predicted c), counted over a whole
split with pixels labelled ``ignore_index`` (255) left out; IoU_c = n_cc / (t_c + p_c - n_cc),
mIoU the mean over classes with a defined IoU (``nanmean``: a class absent from both ground
truth and predictions has none).

The scoring pass counts (n_cc, t_c, p_c) per image (what the paired bootstrap resamples) and sums
them for the metrics: one count, one formula (:func:`iou_from_counts`) for both. Every image of
the split is scored exactly once, also under DDP. :class:`ConfusionMatrix` is the same evaluator
for label maps from elsewhere (``evaluate --pred``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from benchmarks.data.datasets import SegmentationDataset
from benchmarks.data.voc import IGNORE_INDEX, NUM_CLASSES, DataError, VOCSplit, read_label
from benchmarks.distributed import Distributed, ShardSampler, precision_path
from benchmarks.errors import MethodError
from benchmarks.progress import bar

__all__ = ["ConfusionMatrix", "Evaluation", "check_complete", "class_probabilities", "evaluate",
           "evaluate_directories", "iou_from_counts",
           "metrics_from_confusion", "metrics_from_counts"]


class ConfusionMatrix:
    """Accumulates a ``num_classes x num_classes`` int64 confusion matrix over a split."""

    def __init__(self, num_classes: int = 21, ignore_index: int = 255, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.image_ids: list[str] = []

    def update(self, prediction: torch.Tensor, target: torch.Tensor, image_id: str | None = None) -> None:
        """Add one image (``H x W``) or a batch (``N x H x W``) of label maps; ``image_id`` names
        the image (for a batch, pass one call per image or none) so it can be checked."""
        if prediction.shape != target.shape:
            where = f" of image {image_id}" if image_id else ""
            raise DataError(
                f"prediction{where} has shape {tuple(prediction.shape)} but its ground truth has "
                f"{tuple(target.shape)}: predictions must be at full label resolution"
            )
        target = target.to(self.matrix.device, torch.int64)
        prediction = prediction.to(self.matrix.device, torch.int64)
        valid = target != self.ignore_index
        bad_target = valid & ((target < 0) | (target >= self.num_classes))
        bad_prediction = valid & ((prediction < 0) | (prediction >= self.num_classes))
        if bool(bad_target.any()) or bool(bad_prediction.any()):
            which = "ground truth" if bool(bad_target.any()) else "prediction"
            values = torch.unique(target[bad_target] if which == "ground truth" else prediction[bad_prediction])
            raise DataError(
                f"{which}{' of image ' + image_id if image_id else ''} has label values {values.tolist()[:10]} "
                f"outside 0..{self.num_classes - 1} (and {self.ignore_index} = ignore in ground truth)"
            )
        index = target[valid] * self.num_classes + prediction[valid]
        self.matrix += torch.bincount(index, minlength=self.num_classes**2).view(self.num_classes, self.num_classes)
        if image_id is not None:
            self.image_ids.append(image_id)

    def all_reduce(self) -> None:
        """Sum the matrix and gather the image ids over all DDP processes (no-op otherwise)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
        gathered: list[list[str]] = [[] for _ in range(dist.get_world_size())]
        dist.all_gather_object(gathered, self.image_ids)
        self.image_ids = [image_id for ids in gathered for image_id in ids]

    def check_complete(self, expected_ids: Iterable[str]) -> None:
        """Raise unless every id of ``expected_ids`` was scored exactly once and no other was."""
        check_complete(self.image_ids, expected_ids)

    def metrics(self) -> dict[str, object]:
        return metrics_from_confusion(self.matrix.cpu().numpy())


def check_complete(scored_ids: Iterable[str], expected_ids: Iterable[str]) -> None:
    """Raise unless every id of ``expected_ids`` was scored exactly once and no other was."""
    expected = list(expected_ids)
    counts: dict[str, int] = {}
    for image_id in scored_ids:
        counts[image_id] = counts.get(image_id, 0) + 1
    twice = sorted(i for i, n in counts.items() if n > 1)
    missing = sorted(set(expected) - set(counts))
    extra = sorted(set(counts) - set(expected))
    if twice or missing or extra:
        raise RuntimeError(
            f"evaluation did not score every image of the split exactly once: {len(missing)} missing "
            f"{missing[:5]}, {len(twice)} scored more than once {twice[:5]}, {len(extra)} not in the split "
            f"{extra[:5]} (under DDP, use a sampler that does not pad or repeat the split)"
        )


def iou_from_counts(summed: np.ndarray) -> np.ndarray:
    """IoU per class of summed counts ``(..., 3, C)`` = (n_cc, t_c, p_c); NaN where a class is in
    neither ground truth nor prediction. Vectorised over leading axes (bootstrap resamples)."""
    intersection, gt, pred = (summed[..., row, :].astype(np.float64) for row in range(3))
    with np.errstate(divide="ignore", invalid="ignore"):
        return intersection / (gt + pred - intersection)


def metrics_from_counts(summed: np.ndarray) -> dict[str, object]:
    """FCN ``score.py`` metrics of summed counts ``3 x C`` = (n_cc, t_c, p_c): ``miou``,
    ``pixel_acc``, ``mean_acc``, ``fwiou`` and ``per_class_iou`` (``None`` where undefined)."""
    intersection, gt = summed[0].astype(np.float64), summed[1].astype(np.float64)
    total = gt.sum()
    if total == 0:
        raise DataError("no labelled pixel was scored: every ground-truth pixel is ignore (255)")
    iou = iou_from_counts(summed)
    with np.errstate(divide="ignore", invalid="ignore"):
        class_acc = intersection / gt
    freq = gt / total
    present = freq > 0
    return {
        "miou": float(np.nanmean(iou)),
        "pixel_acc": float(intersection.sum() / total),
        "mean_acc": float(np.nanmean(class_acc)),
        "fwiou": float((freq[present] * iou[present]).sum()),
        "per_class_iou": [None if np.isnan(v) else float(v) for v in iou],
    }


def metrics_from_confusion(matrix: np.ndarray) -> dict[str, object]:
    """:func:`metrics_from_counts` of a confusion matrix (rows = ground truth)."""
    return metrics_from_counts(np.stack([np.diag(matrix), matrix.sum(1), matrix.sum(0)]))


@dataclass
class Evaluation:
    """Metrics of one pass (``None`` for a split without labels), and per image the counts a
    paired bootstrap needs: ``counts[i] = (intersection, ground truth, prediction)`` per class."""

    metrics: dict[str, object] | None
    image_ids: list[str]
    counts: np.ndarray  # images x 3 x classes, int64


def class_probabilities(model: nn.Module, images: torch.Tensor, device: torch.device,
                        precision: str = "fp32", published: bool = False) -> torch.Tensor:
    """The softmax (float32) of ``model`` on uint8 ``images``: ``3 x H x W`` -> ``C x H x W``, or a
    batch ``N x 3 x H x W`` -> ``N x C x H x W``, in ``precision`` (``precision_path``; channels_last on CUDA).
    ``published``: the paper's own test procedure (``published_probabilities``, e.g. tiles)."""
    batch = images if images.ndim == 4 else images[None]
    autocast, channels_last = precision_path(device, precision)
    with torch.inference_mode(), autocast:
        inputs = model.input_convention.normalize(batch.to(device, non_blocking=True))
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        probabilities = model.published_probabilities(inputs) if published else torch.softmax(model(inputs).float(), 1)
    return probabilities if images.ndim == 4 else probabilities[0]


def _image_counts(prediction: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """``3 x C`` (intersection, ground truth, prediction) pixel counts of one image, on the device
    and without a host sync (ignored pixels go to an extra bin that is dropped)."""
    valid = label != IGNORE_INDEX
    bins = NUM_CLASSES + 1

    def count(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return torch.bincount(torch.where(keep, values, NUM_CLASSES).flatten(), minlength=bins)[:NUM_CLASSES]

    return torch.stack([count(label, valid & (prediction == label)), count(label, valid), count(prediction, valid)])


def evaluate(model: nn.Module, split: VOCSplit, dist_info: Distributed,
             refine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
             batch_size: int = 1, published: bool = False, precision: str = "fp32",
             on_prediction: Callable[[str, torch.Tensor], None] | None = None) -> Evaluation:
    """Score ``split`` at full resolution, each image once (sharded under DDP). ``refine(image,
    probabilities)`` post-processes the softmax (the dense CRF) before the argmax. Images of the
    same size go through the network ``batch_size`` at a time; counts stay on the device until
    the end. On a terminal, a bar counts this process's images. ``published``: each method's own
    test procedure (:func:`class_probabilities`), in ``precision``. ``on_prediction(image_id, labels)``
    receives each image's predicted label map (e.g. to save it); a split without labels is predicted,
    not scored."""
    device = dist_info.device
    model.eval()
    dataset = SegmentationDataset(split)
    ids, counts = [], []
    buckets: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor, str]]] = {}
    shard = ShardSampler(len(dataset), dist_info.rank, dist_info.world_size)
    shard_of = f" (shard 1 of {dist_info.world_size})" if dist_info.world_size > 1 else ""
    live = bar(f"scoring {split.split}{shard_of}", len(shard), "img", main=dist_info.is_main)

    def score(bucket: list[tuple[torch.Tensor, torch.Tensor, str]]) -> None:
        probabilities = class_probabilities(model, torch.stack([image for image, _, _ in bucket]), device,
                                            precision=precision, published=published)
        for (image, label, image_id), probs in zip(bucket, probabilities, strict=True):
            if refine is not None:
                probs = refine(image, probs)
            prediction = probs.argmax(0)
            if prediction.shape != label.shape:
                raise MethodError(f"the prediction of image {image_id} is {tuple(prediction.shape)} but its label is "
                                 f"{tuple(label.shape)}: predictions must be at full label resolution")
            if on_prediction is not None:
                on_prediction(image_id, prediction)
            ids.append(image_id)
            counts.append(_image_counts(prediction, label.to(device, non_blocking=True)))
        live.update(len(bucket))

    with live:
        for index in shard:
            sample = dataset[index]
            bucket = buckets.setdefault(tuple(sample[0].shape), [])
            bucket.append(sample)
            if len(bucket) == batch_size:
                score(buckets.pop(tuple(sample[0].shape)))
        for bucket in buckets.values():
            score(bucket)
    position = {image_id: i for i, image_id in enumerate(split.ids)}
    host_counts = torch.stack(counts).cpu().numpy() if counts else []
    pairs = sorted(zip(ids, host_counts, strict=True), key=lambda p: position[p[0]])
    if dist_info.world_size > 1:
        gathered: list[list] = [[] for _ in range(dist_info.world_size)]
        dist.all_gather_object(gathered, pairs)
        pairs = sorted((p for part in gathered for p in part), key=lambda p: position[p[0]])
    check_complete([p[0] for p in pairs], split.ids)
    per_image = np.stack([p[1] for p in pairs])
    metrics = metrics_from_counts(per_image.sum(0)) if split.labelled else None
    return Evaluation(metrics, [p[0] for p in pairs], per_image)


def _label_files(folder: Path, option: str) -> dict[str, Path]:
    """The ``*.png`` files of ``folder`` by stem; anything else under that name (a named pipe that
    would block the read, a device, a folder) is an error."""
    if not folder.is_dir():
        raise DataError(f"{option} {folder} is not a directory")
    files = {}
    for path in sorted(folder.glob("*.png")):
        if not path.is_file():
            raise DataError(f"{option}: {path} is not a regular file (a pipe, a device or a folder); only regular PNG "
                            "files are read: move it out of the folder")
        files[path.stem] = path
    return files


def evaluate_directories(pred_dir: Path, gt_dir: Path, num_classes: int = 21) -> dict[str, object]:
    """Score every label PNG of ``gt_dir`` against the prediction of the same file stem in
    ``pred_dir`` with the one evaluator."""
    pred_files, gt_files = _label_files(pred_dir, "--pred"), _label_files(gt_dir, "--gt")
    if pred_dir.samefile(gt_dir):
        raise DataError(f"--pred and --gt are the same folder ({pred_dir}): ground truth scored against itself is "
                        "always 100; pass the folder of predictions as --pred")
    if not gt_files:
        raise DataError(f"--gt {gt_dir} holds no .png label maps")
    missing = sorted(set(gt_files) - set(pred_files))
    if missing:
        raise DataError(f"{len(missing)} ground-truth images have no prediction in {pred_dir}, e.g. {missing[:5]} "
                        "(predictions are matched by file stem)")
    confusion = ConfusionMatrix(num_classes)
    for stem, gt_path in gt_files.items():
        target = read_label(gt_path, num_classes)
        try:
            prediction = read_label(pred_files[stem], num_classes)
        except DataError as error:
            raise DataError(f"prediction: {error}") from None
        if prediction.shape != target.shape:
            raise DataError(f"prediction {pred_files[stem]} is {prediction.shape[1]}x{prediction.shape[0]} but "
                            f"{gt_path} is {target.shape[1]}x{target.shape[0]}")
        confusion.update(torch.from_numpy(prediction), torch.from_numpy(target), stem)
    confusion.check_complete(gt_files)
    return {**confusion.metrics(), "images": len(gt_files),
            "unscored_predictions": len(set(pred_files) - set(gt_files))}
