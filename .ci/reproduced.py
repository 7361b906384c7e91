"""CI's check of the main command (issue 23, item 3), run after ``run --all`` on a clean clone.

Every target's seed-0 record must
1. score weights this clone's main command trained (``runs/`` is not committed): a record it
   rewrote, or one it reused because retraining gave weights of the very sha256 it scored; and
2. reproduce the committed record exactly (weights sha256 and every metric). On the CPU the
   trained weights depend on the thread count, the SIMD kernels and the torch build
   (``records.hardware``), so a record that differs is a failure only when this machine is the
   committed record's kind; otherwise the difference and the machine's are named.

    python .ci/reproduced.py   # from the repository root, after the main command
"""

import json
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.files import file_sha256
from benchmarks.networks import run_folder
from benchmarks.records import hardware
from benchmarks.resolve import main_command_targets

RECORDS = Path("results/records/quick-embedded")
MACHINE_KIND = ("torch_threads", "cpu_simd", "aten_cpu_capability", "onednn_max_cpu_isa", "torch")


def committed(path: Path) -> dict | None:
    """The record as the checked-out commit holds it, or None if it holds none."""
    shown = subprocess.run(["git", "show", f"HEAD:{path}"], capture_output=True, text=True)
    return json.loads(shown.stdout) if shown.returncode == 0 else None


def problems_of(target: str, here: dict[str, object]) -> tuple[list[str], str | None]:
    """What is wrong with ``target``'s seed-0 record, and a note when it was not compared."""
    path = RECORDS / target / "seed0.json"
    if not path.is_file():
        return [f"{target}: no record"], None
    record = json.loads(path.read_text())
    weights = run_folder(Path("runs"), "quick", "embedded", record["base_method"], 0,
                         key=record["run_key"]) / "weights.pt"
    if not weights.is_file() or file_sha256(weights) != record["trained_weights_sha256"]:
        return [f"{target}: its record did not score the weights this run trained ({weights})"], None
    old = committed(path)
    if old is None:
        return [], f"{target}: no committed record to reproduce"
    wrong = [f"weights sha256 {old['trained_weights_sha256'][:12]} -> {record['trained_weights_sha256'][:12]}"] \
        if old["trained_weights_sha256"] != record["trained_weights_sha256"] else []
    wrong += [f"{key} {old['metrics'].get(key)} -> {record['metrics'][key]}" for key in record["metrics"]
              if old["metrics"].get(key) != record["metrics"][key]]
    if not wrong:
        return [], None
    differences = [key for key in MACHINE_KIND if old["hardware"].get(key) != here[key]]
    if differences:
        return [], (f"{target}: not reproduced ({wrong[0]}), as expected: committed on another kind of machine "
                    f"({', '.join(differences)})")
    return [f"{path}: not reproduced: {'; '.join(wrong)}"], None


def main() -> None:
    here = hardware(torch.device("cpu"), 1)
    problems, notes = [], []
    for target in main_command_targets():
        found, note = problems_of(target, here)
        problems += found
        notes += [note] if note else []
    for line in notes:
        print(f"[ci] {line}")
    if problems:
        sys.exit("the main command did not reproduce its records: " + " | ".join(problems))
    exact = len(main_command_targets()) - len(notes)
    print(f"[ci] all {len(main_command_targets())} seed-0 records score weights this run trained; "
          f"{exact} reproduce the committed record exactly")


if __name__ == "__main__":
    main()
