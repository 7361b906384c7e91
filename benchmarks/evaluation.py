"""The one evaluator (SPEC section 5): a dataset-level confusion matrix, as FCN's ``score.py``.

Rows are ground truth, columns predictions; pixels labelled ``ignore_index`` (255) are not
counted. IoU_c = n_cc / (t_c + p_c - n_cc); mIoU is the mean over classes with a defined IoU
(``nanmean``: a class absent from both ground truth and predictions has none). The matrix lives
on the predictions' device (int64, filled by ``bincount``), is summed across DDP processes, and
the evaluator checks that every image of the split was scored exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["ConfusionMatrix", "metrics_from_confusion"]


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
            raise ValueError(
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
            raise ValueError(
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
        expected = list(expected_ids)
        counts: dict[str, int] = {}
        for image_id in self.image_ids:
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

    def metrics(self) -> dict[str, object]:
        return metrics_from_confusion(self.matrix.cpu().numpy())


def metrics_from_confusion(matrix: np.ndarray) -> dict[str, object]:
    """FCN ``score.py`` metrics of a confusion matrix (rows = ground truth): ``miou``,
    ``pixel_acc``, ``mean_acc``, ``fwiou`` and ``per_class_iou`` (``None`` where undefined)."""
    hist = matrix.astype(np.float64)
    diag = np.diag(hist)
    gt, pred = hist.sum(1), hist.sum(0)
    total = hist.sum()
    if total == 0:
        raise ValueError("no labelled pixel was scored: every ground-truth pixel is ignore (255)")
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = diag / (gt + pred - diag)
        class_acc = diag / gt
    freq = gt / total
    present = freq > 0
    return {
        "miou": float(np.nanmean(iou)),
        "pixel_acc": float(diag.sum() / total),
        "mean_acc": float(np.nanmean(class_acc)),
        "fwiou": float((freq[present] * iou[present]).sum()),
        "per_class_iou": [None if np.isnan(v) else float(v) for v in iou],
    }
