"""Where the seed-to-seed spread of the quick profile's mIoU comes from (issue 23, item 4; NOTES.md).

    python tools/seed_variance.py [results/records/quick-embedded]

For each target with records of several seeds: the mIoU's sd over seeds, and the sd left when the
IoU of one group of classes is held at its mean over the seeds (the other classes keep their
per-seed values). Groups: the classes the scene cue decides (the embedded data's context pairs:
boat/car, bird/aeroplane, sheep/cow), the other drawn objects (bicycle, person, train), the cue
objects (bottle, tvmonitor) and background.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.data.embedded_scenes import CONTEXT_PAIRS, SCENE_CUES

PAIRED = sorted(c for pair in CONTEXT_PAIRS for c in pair)
GROUPS = {"context pairs": PAIRED, "other objects": [2, 15, 19], "cues": list(SCENE_CUES), "background": [0]}


def per_class_iou(folder: Path) -> np.ndarray:
    """seeds x classes IoU (NaN where a class is absent) of one target's records."""
    rows = [json.loads(path.read_text())["metrics"]["per_class_iou"] for path in sorted(folder.glob("seed*.json"))]
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "results/records/quick-embedded")
    print(f"| target | seeds | mIoU | sd | {' | '.join(f'sd, {name} fixed' for name in GROUPS)} |")
    print(f"|---|---|---|---|{'---|' * len(GROUPS)}")
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        iou = per_class_iou(folder)
        if len(iou) < 2:
            continue
        miou = 100 * np.nanmean(iou, axis=1)
        fixed = []
        for classes in GROUPS.values():
            held = iou.copy()
            held[:, classes] = np.nanmean(iou[:, classes], axis=0)
            fixed.append(np.std(100 * np.nanmean(held, axis=1), ddof=1))
        print(f"| {folder.name} | {len(iou)} | {miou.mean():.2f} | {np.std(miou, ddof=1):.2f} | "
              + " | ".join(f"{sd:.2f}" for sd in fixed) + " |")


if __name__ == "__main__":
    main()
