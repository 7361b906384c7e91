"""Dense-CRF speed: ms per 500x375 image, 21 labels, 10 mean-field iterations, for each backend,
as a ratio against pydensecrf measured in the same run.

    python -m benchmarks.bench.crf [--repeats 5] [--batch 8] [--threads 1,2] [--noise] [--json]

pydensecrf is single-threaded; the torch backend is timed on the CPU at each ``--threads`` count
(1 is the like-for-like comparison). The load average of the machine is recorded with the times.

The probabilities are a smooth random field (blurred random logits); the image is a genuine VOC
image when ``../shared/data/voc-real-mini`` or ``--image`` is there, else a synthetic one. The
time includes building the lattices (they depend on the image) and excludes the network.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.crf.dense_crf import CRFParams, TorchDenseCRF, dense_crf
from benchmarks.data.voc import NUM_CLASSES, VOC_HEIGHT, VOC_WIDTH

__all__ = ["crf_inputs", "crf_timings"]

_SAMPLE = Path(__file__).resolve().parents[3] / "shared/data/voc-real-mini/VOCdevkit/VOC2012/JPEGImages/2007_000123.jpg"


def crf_inputs(image_path: Path | None = None, height: int = VOC_HEIGHT, width: int = VOC_WIDTH, seed: int = 0,
               noise: bool = False) -> tuple[torch.Tensor, torch.Tensor, str]:
    """An image (``image_path``, else the genuine VOC sample when present, else smooth synthetic
    colours; ``noise``: i.i.d. random colours, the lattice's worst case, about one vertex per
    pixel) and a smooth random softmax, ``height x width``."""
    generator = torch.Generator().manual_seed(seed)
    path = None if noise else image_path or (_SAMPLE if _SAMPLE.is_file() else None)
    if noise:
        image = torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8)
        origin = "i.i.d. random colours"
    elif path is not None:
        from PIL import Image

        with Image.open(path) as opened:
            image = torch.from_numpy(np.array(opened.convert("RGB").resize((width, height)))).permute(2, 0, 1)
        origin = str(path)
    else:
        image = torch.randint(0, 256, (3, max(2, height // 25), max(2, width // 25)), generator=generator)
        image = F.interpolate(image[None].float(), (height, width), mode="bilinear")[0]
        image = image.round().to(torch.uint8)
        origin = "synthetic"
    logits = torch.randn(1, NUM_CLASSES, max(2, height // 8), max(2, width // 8), generator=generator) * 3
    probs = torch.softmax(F.interpolate(logits, (height, width), mode="bilinear")[0], 0)
    return image, probs, origin


def _time_once(call, device: torch.device, threads: int) -> float:
    torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def crf_timings(repeats: int = 3, batch: int = 8, image_path: Path | None = None,
                devices: list[str] | None = None, threads: tuple[int, ...] = (1, 2),
                noise: bool = False) -> dict[str, object]:
    """Median ms per image for pydensecrf (when installed) and the torch backend on each device
    (one image per call, and ``batch`` images per call; on the CPU at each count of ``threads``).
    The cases take turns within each repeat, so that a shared machine's load falls on all alike."""
    image, probs, origin = crf_inputs(image_path, noise=noise)
    params = CRFParams()
    devices = devices or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    initial_threads = torch.get_num_threads()
    cases = []  # (row, call, device, threads, images per call)
    try:
        import pydensecrf.densecrf  # noqa: F401
        cases.append(({"backend": "pydensecrf", "device": "cpu (1 thread)", "images_per_call": 1},
                      lambda: dense_crf(image, probs, params, "pydensecrf"), torch.device("cpu"), initial_threads))
    except ImportError:
        pass
    for name in devices:
        device = torch.device(name)
        on_device = probs.to(device)
        for thread_count in threads if device.type == "cpu" else (initial_threads,):
            for count in sorted({1, batch}):
                images, maps = [image] * count, [on_device] * count
                label = torch.cuda.get_device_name(device) if device.type == "cuda" else \
                    f"cpu ({thread_count} thread{'s' if thread_count > 1 else ''})"
                cases.append(({"backend": "torch", "device": label, "images_per_call": count},
                              lambda images=images, maps=maps: TorchDenseCRF(images, maps).refine(params), device,
                              thread_count))
    for _, call, device, thread_count in cases:  # warm-up (allocations, cuSPARSE handles, cached lattices)
        _time_once(call, device, thread_count)
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(repeats):
        for measured, (_, call, device, thread_count) in zip(times, cases, strict=True):
            measured.append(_time_once(call, device, thread_count))
    torch.set_num_threads(initial_threads)
    rows = [{**row, "ms_per_image": 1000 * float(np.median(measured)) / row["images_per_call"]}
            for measured, (row, *_) in zip(times, cases, strict=True)]
    reference = next((r["ms_per_image"] for r in rows if r["backend"] == "pydensecrf"), None)
    for row in rows:
        row["speedup_vs_pydensecrf"] = reference / row["ms_per_image"] if reference else None
    return {"image": origin, "size": f"{VOC_WIDTH}x{VOC_HEIGHT}", "labels": NUM_CLASSES,
            "iterations": params.iterations, "params": params.__dict__, "repeats": repeats,
            "load_average": os.getloadavg(), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image", type=Path)
    parser.add_argument("--threads", default="1,2", help="comma-separated CPU thread counts for the torch backend")
    parser.add_argument("--noise", action="store_true", help="i.i.d. random colours: the lattice's worst case")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = crf_timings(args.repeats, args.batch, args.image, threads=tuple(int(t) for t in args.threads.split(",")),
                         noise=args.noise)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"dense CRF, {result['size']}, {result['labels']} labels, {result['iterations']} iterations, "
          f"image: {result['image']}; load average {', '.join(f'{x:.2f}' for x in result['load_average'])}")
    for row in result["rows"]:
        ratio = f"{row['speedup_vs_pydensecrf']:.2f}x" if row["speedup_vs_pydensecrf"] else "n/a"
        print(f"  {row['backend']:<11} {row['device']:<28} {row['images_per_call']:>2} img/call  "
              f"{row['ms_per_image']:9.1f} ms/image  {ratio} vs pydensecrf")


if __name__ == "__main__":
    main()
