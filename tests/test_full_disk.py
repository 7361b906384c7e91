"""A full disk while writing under --runs / --results is one line naming the folder, with nothing
half-written left (issue 26 item 4: it ended in a traceback). The disk is filled for real: the
command runs in a child process under a file-size limit (``RLIMIT_FSIZE``, SIGXFSZ ignored), so a
write past it fails with EFBIG from the kernel, as ENOSPC does on a full disk."""

import resource
import signal
import subprocess
import sys

from conftest import ROOT


def _limited(limit_bytes: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then write() fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


def _run_limited(args: list[str], limit_bytes: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from benchmarks.cli import main; sys.exit(main())",
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          preexec_fn=_limited(limit_bytes))


def test_a_full_runs_folder_is_one_line_and_leaves_nothing_half_written(tmp_path, small_voc):
    data = small_voc(tmp_path / "voc")
    runs, results = tmp_path / "runs", tmp_path / "results"
    result = _run_limited(["run", "deeplab_v1", "--data", str(data), "--profile", "quick", "--set", "iterations=2",
                           "--set", "checkpoint_every=1", "--set", "batch_size=1", "--results", str(results),
                           "--runs", str(runs), "--no-report"], 16_000)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: no space left to write under {runs}/"), lines
    assert "(File too large)" in lines[0] and "nothing half-written" in lines[0]
    left = sorted(p.name for p in runs.rglob("*") if p.is_file())
    assert "checkpoint.pt" not in left and "weights.pt" not in left and not [n for n in left if n.endswith(".tmp")], \
        left  # the append-only logs (log.csv, tensorboard events) are not atomic writes
    assert not results.exists() or not [p for p in results.rglob("*") if p.is_file()]


def test_torch_save_and_npz_under_a_full_disk_name_the_folder(tmp_path):
    """``torch.save`` reports a failed write as a RuntimeError about stream positions; the atomic
    writer still says the disk is full, for torch, numpy and plain bytes alike."""
    script = ("import sys, numpy as np, torch; from pathlib import Path; "
              "from benchmarks.files import NoSpace, save_torch, write_atomic, write_bytes_atomic\n"
              "folder = Path(sys.argv[1])\n"
              "writes = [lambda: save_torch({'w': torch.zeros(100_000)}, folder / 'a.pt'),\n"
              "          lambda: write_atomic(folder / 'b.npz', lambda f: np.savez(f, counts=np.zeros(100_000))),\n"
              "          lambda: write_bytes_atomic(folder / 'c.json', bytes(200_000))]\n"
              "for write in writes:\n"
              "    try:\n"
              "        write()\n"
              "    except NoSpace as error:\n"
              "        print(error)\n")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, preexec_fn=_limited(50_000))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [f"no space left to write under {tmp_path} (File too large); nothing "
                                          "half-written was left: free space there, or point --runs, --results or "
                                          "SEGREPRO_CACHE at a larger disk, and run again"] * 3
    assert list(tmp_path.iterdir()) == []
