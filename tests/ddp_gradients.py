"""Run under ``torchrun --nproc_per_node N`` (gloo, CPU) by ``tests/test_plan.py``: one training
step of ``RECIPE`` on a fixed global batch of genuine VOC crops, each process on its share
(``PlannedBatches``: every N-th item, uneven when N does not divide the batch); rank 0 writes
the gradients to OUT. Without torchrun, the same step in one process."""

import dataclasses
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from benchmarks.data.voc import read_image, read_label
from benchmarks.distributed import Distributed
from benchmarks.networks import build_model
from benchmarks.optimizer import build_optimizer
from benchmarks.recipes import get_recipe
from benchmarks.train import training_step
from benchmarks.training_mode import TrainedPart


def main(method: str, voc: Path, out: Path) -> None:
    dist_info = Distributed.from_environment("cpu")
    # no dropout: its random masks would differ between one process and two
    recipe = dataclasses.replace(get_recipe(method, "paper"), pretrained=False, width=1 / 16, batch_size=3, dropout=0.0)
    ids = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[:recipe.batch_size]
    images = torch.stack([torch.from_numpy(read_image(voc / "JPEGImages" / f"{i}.jpg")[:160, :160]).permute(2, 0, 1)
                          for i in ids])
    labels = torch.stack([torch.from_numpy(read_label(voc / "SegmentationClass" / f"{i}.png")[:160, :160]).long()
                          for i in ids])
    if recipe.loss_on_score_map:
        labels = labels[:, ::8, ::8]
    torch.manual_seed(0)
    model = build_model(recipe)
    part = TrainedPart(model, recipe)
    wrapped = nn.parallel.DistributedDataParallel(part) if dist_info.world_size > 1 else part
    share = slice(dist_info.rank, None, dist_info.world_size)
    optimizer = build_optimizer(model, recipe)
    training_step(wrapped, optimizer, images[share], labels[share], recipe=recipe, dist_info=dist_info)
    if dist_info.is_main:
        torch.save({n: p.grad for n, p in model.named_parameters() if p.grad is not None}, out)
    if dist_info.world_size > 1:
        dist.barrier()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
