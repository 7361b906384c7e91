"""The evaluator under DDP: two gloo processes, each scoring its shard, give the single-process
confusion matrix, and the exactly-once check sees every image."""

import shutil
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.distributed import ShardSampler
from benchmarks.evaluation import ConfusionMatrix

IMAGES = 7  # odd, so the shards differ in length


def _maps(index: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(index)
    target = torch.randint(0, 21, (13, 17), generator=generator)
    target[torch.rand(13, 17, generator=generator) < 0.1] = 255
    prediction = torch.randint(0, 21, (13, 17), generator=generator)
    return prediction, target


def _worker(rank: int, world_size: int, port: int, out: str, drop_one: bool) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        confusion = ConfusionMatrix(21)
        for index in ShardSampler(IMAGES, rank, world_size):
            if drop_one and index == IMAGES - 1:
                continue
            confusion.update(*_maps(index), image_id=f"img{index}")
        confusion.all_reduce()
        try:
            confusion.check_complete(f"img{i}" for i in range(IMAGES))
            status = "complete"
        except RuntimeError as error:
            status = str(error)
        if rank == 0:
            torch.save({"matrix": confusion.matrix, "status": status, "ids": confusion.image_ids}, out)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one(tmp_path):
    single = ConfusionMatrix(21)
    for index in range(IMAGES):
        single.update(*_maps(index), image_id=f"img{index}")
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out), False), nprocs=2)
    result = torch.load(out, weights_only=True)
    assert torch.equal(result["matrix"], single.matrix)
    assert result["status"] == "complete" and sorted(result["ids"]) == sorted(single.image_ids)

    mp.spawn(_worker, args=(2, _free_port(), str(out), True), nprocs=2)
    assert "1 missing ['img6']" in torch.load(out, weights_only=True)["status"]


def test_shard_sampler_covers_each_index_once():
    shards = [list(ShardSampler(10, rank, 3)) for rank in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(10))
    assert [len(ShardSampler(10, rank, 3)) for rank in range(3)] == [4, 3, 3]


def test_batched_evaluation_by_size_gives_the_per_image_counts(shared_dir, tmp_path):
    """``evaluate(batch_size=4)`` groups the genuine VOC images by size (several sizes, partial
    buckets) and gives the same confusion matrix and per-image counts, in split order, as one
    image at a time; the counts add up to the matrix."""
    import methods
    from benchmarks.data.voc import VOCSplit
    from benchmarks.distributed import Distributed
    from benchmarks.evaluation import ConfusionMatrix, class_probabilities, evaluate

    source = VOCSplit(shared_dir / "data/voc-real-mini", "val")
    root = tmp_path / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    chosen = source.ids[:10]
    for image_id in chosen:
        shutil.copy(source.image_path(image_id), root / "JPEGImages")
        shutil.copy(source.label_path(image_id), root / "SegmentationClass")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(chosen) + "\n")
    split = VOCSplit(tmp_path, "val")
    torch.manual_seed(0)
    model = methods.create("deeplab_v1", 21, width=1 / 16, pretrained=False)
    one = evaluate(model, split, Distributed())
    four = evaluate(model, split, Distributed(), batch_size=4)
    sizes = [tuple(split[i].image.shape) for i in range(len(split))]
    assert len(set(sizes)) > 2 and max(sizes.count(size) for size in sizes) >= 2  # partial and shared buckets
    assert one.image_ids == four.image_ids == split.ids
    assert (one.counts == four.counts).all() and one.metrics == four.metrics
    matrix = ConfusionMatrix(21)  # one image at a time, counted independently of the scoring pass
    for index in range(len(split)):
        sample = split[index]
        probabilities = class_probabilities(model, torch.from_numpy(sample.image).permute(2, 0, 1),
                                            torch.device("cpu"))
        matrix.update(probabilities.argmax(0), torch.from_numpy(sample.label))
    assert (four.counts[:, 1].sum(0) == matrix.matrix.sum(1).numpy()).all()  # ground-truth pixels per class
    assert (four.counts[:, 2].sum(0) == matrix.matrix.sum(0).numpy()).all()  # predicted pixels per class
    assert (four.counts[:, 0].sum(0) == matrix.matrix.diagonal().numpy()).all()
    assert four.metrics == matrix.metrics()
