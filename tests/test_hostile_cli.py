"""Hostile input at the command line (issue 12): every expected failure is one line on stderr that
names the file or argument and the fix, with exit status 2; a traceback is a bug. Each case fails
before any data is generated or any network trained; most run ``main`` in this process, those that
need a fresh one (a hang, ``python -m``) a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from record_files import write_valid_record

from benchmarks import catalogue
from benchmarks.cli import main
from benchmarks.data.datasets import resolve_dataset
from benchmarks.resolve import RunPlan, resolve_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_data(tmp_path, monkeypatch):
    """The embedded dataset's cache in ``tmp_path``, no VOC data from the environment."""
    monkeypatch.setenv("SEGREPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SEGREPRO_DATA", raising=False)


def run_main(capsys, *args: object) -> tuple[int, str]:
    """``main(args)`` in this process: its exit status (argparse's included) and stderr."""
    try:
        status = main([str(a) for a in args])
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


def assert_one_line_error(status: int, err: str, *words: str) -> None:
    """Exit status 2, no traceback, and a last line ``error: ...`` (argparse: ``PROG CMD: error: ...``)
    holding every one of ``words``."""
    assert status == 2, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ") or ": error: " in line, err
    for word in words:
        assert word in line, (word, line)


@pytest.mark.parametrize(("args", "words"), [
    (["run"], ["name methods to run", "--all"]),
    (["compare", "no_such_head", "--baseline", "deeplab_v1"], ["unknown method 'no_such_head'", "--import"]),
    (["prepare-data"], ["--sbd PATH"]),
])
def test_usage_mistakes_are_one_line(capsys, args, words):
    assert_one_line_error(*run_main(capsys, *args), *words)


def test_report_without_records_names_the_folder(capsys, tmp_path):
    status, err = run_main(capsys, "report", "--results", tmp_path / "r", "--reports", tmp_path / "p")
    assert_one_line_error(status, err, str(tmp_path / "r" / "records"), "run")


def test_an_unexpected_exception_still_raises(capsys, monkeypatch):
    """Only the expected failures are turned into one line; a bug keeps its traceback."""
    def broken() -> list[dict[str, object]]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(catalogue, "list_rows", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["list"])



def write_record(results: Path, method: str, miou: float) -> Path:
    """A valid record ``check`` reads: comparable, on VOC 2012 val."""
    return write_valid_record(results, method, miou)


@pytest.mark.parametrize("content", ['{"method": "deeplab_v1", "se', "", "[]", '{"method": "deeplab_v1"}'])
@pytest.mark.parametrize("command", ["check", "report"])
def test_a_broken_record_names_itself_and_the_fix(capsys, tmp_path, content, command):
    """A truncated or foreign JSON file blocks every command that reads the records, with a line
    naming it; ``check`` must not pass because the one record that would have failed is unreadable."""
    write_record(tmp_path, "fcn8s", 62.2)
    broken = write_record(tmp_path, "deeplab_v1", 50.0)
    broken.write_text(content)
    assert_refused(capsys, command, tmp_path, str(broken), "delete it", "git checkout")


def assert_refused(capsys, command: str, results: Path, *words: str) -> None:
    """``check`` stops with a line holding ``words``; ``report`` leaves the record out with such a
    line on stderr and reports the others."""
    extra = ["--reports", results / "reports"] if command == "report" else []
    status, err = run_main(capsys, command, "--results", results, *extra)
    if command == "check":
        assert_one_line_error(status, err, *words)
        return
    assert status == 0 and "Traceback" not in err, err
    (line,) = [line for line in err.splitlines() if line.startswith("left out: ")]
    for word in words:
        assert word in line, (word, line)
    assert (results / "reports" / "report.md").is_file()


@pytest.mark.parametrize(("name", "fix"), [("weights.pt", "retrain"), ("checkpoint.pt", "from scratch")])
@pytest.mark.parametrize("cut", [0, 100])
def test_a_truncated_checkpoint_or_weights_file_names_itself(capsys, tmp_path, small_voc, name, fix, cut):
    data = small_voc(tmp_path / "voc")
    plan = RunPlan(profile="quick", seeds=(0,), runs=tmp_path / "runs")
    path = resolve_run(plan, resolve_dataset(data), "deeplab_v1", 0).folder / name
    path.parent.mkdir(parents=True)
    torch.save({"model": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:cut])
    status, err = run_main(capsys, "run", "deeplab_v1", "--data", data, "--profile", "quick",
                           "--results", tmp_path / "results", "--runs", tmp_path / "runs", "--no-report")
    assert_one_line_error(status, err, str(path), "truncated or damaged", "delete it", fix)


@pytest.mark.parametrize(("change", "words"), [
    ({"metrics": {"miou": float("nan")}}, "metrics.miou nan"),
    ({"metrics": {"miou": "0.5"}}, "metrics.miou '0.5'"),
    ({"metrics": {"miou": 1.5}}, "metrics.miou 1.5"),
    ({"seed": "1"}, "seed '1'"),
    ({"profile": "../../.."}, "profile '../../..'"),
    ({"profile": "/abs/where"}, "profile '/abs/where'"),
    ({"dataset": {"name": "../../z", "split": "val"}}, "dataset.name '../../z'"),
    ({"metrics": None}, "metrics None is not an object"),
    ({"method": "fcn8s"}, "method 'fcn8s' is not its base_method 'deeplab_v1'"),
])
@pytest.mark.parametrize("command", ["check", "report"])
def test_a_record_with_impossible_fields_names_itself(capsys, tmp_path, change, words, command):
    """Hand-edited or foreign records: out-of-range or mistyped values and names that would become
    paths outside ``results/`` or ``reports/`` stop every reader with a line naming the file."""
    write_record(tmp_path, "fcn8s", 62.2)
    path = write_record(tmp_path, "deeplab_v1", 62.0)
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    assert_refused(capsys, command, tmp_path, str(path), words, "delete it")
    assert not (tmp_path.parent / "tables").exists() and not (tmp_path.parent / "reports").exists()


def test_a_record_that_is_a_pipe_does_not_hang(tmp_path):
    path = write_record(tmp_path, "deeplab_v1", 62.0)
    path.unlink()
    os.mkfifo(path)
    done = subprocess.run([sys.executable, "-m", "benchmarks", "check", "--results", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert_one_line_error(done.returncode, done.stderr, str(path), "not a regular file")


def unwritable(tmp_path: Path, kind: str) -> Path:
    """A folder that cannot be written, even as root: under /proc, under a regular file, or a
    regular file itself."""
    if kind == "proc":
        return Path("/proc/segrepro-test")
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "sub" if kind == "under-file" else tmp_path / "file"


@pytest.mark.parametrize("kind", ["proc", "under-file", "file"])
@pytest.mark.parametrize(("command", "option"), [(["run", "deeplab_v1"], "--results"), (["run", "fcn8s"], "--runs"),
                                                 (["run", "fcn8s"], "--reports"),
                                                 (["crf-search", "deeplab_v1"], "--results"),
                                                 (["compare", "deeplab_v1", "--baseline", "fcn8s"], "--runs")])
def test_unwritable_output_folders_fail_before_any_work(capsys, tmp_path, kind, command, option):
    folder = unwritable(tmp_path, kind)
    outputs = {"--results": tmp_path / "r", "--runs": tmp_path / "w", "--reports": tmp_path / "p", option: folder}
    if command[0] != "run":
        del outputs["--reports"]
    status, err = run_main(capsys, *command, *(a for item in outputs.items() for a in item))
    assert_one_line_error(status, err, f"{option} {folder}", "not a folder you can write to", f"pass another {option}")
    assert not (tmp_path / "cache").exists()  # failed before generating the embedded dataset


def test_a_broken_record_stops_a_run_before_it_trains(capsys, tmp_path):
    broken = write_record(tmp_path / "r", "fcn8s", 62.2)
    broken.write_text("{")
    status, err = run_main(capsys, "run", "deeplab_v1", "--results", tmp_path / "r", "--runs", tmp_path / "w")
    assert_one_line_error(status, err, str(broken), "delete it")
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("kind", ["under-file", "file"])
def test_an_unwritable_cache_is_one_line_naming_the_variable(capsys, tmp_path, monkeypatch, kind):
    monkeypatch.setenv("SEGREPRO_CACHE", str(unwritable(tmp_path, kind)))
    status, err = run_main(capsys, "run", "deeplab_v1", "--results", tmp_path / "r", "--runs", tmp_path / "w",
                           "--no-report")
    assert_one_line_error(status, err, "cannot write the embedded dataset into", str(unwritable(tmp_path, kind)),
                          "$SEGREPRO_CACHE")


@pytest.mark.parametrize(("args", "words"), [
    (["run", "deeplab_v1", "--device", "bogus"], ["--device", "unknown device 'bogus'", "cpu, cuda"]),
    (["run", "deeplab_v1", "--device", "mps"], ["--device", "cpu or cuda, not 'mps'"]),
    pytest.param(["run", "deeplab_v1", "--device", "cuda"], ["--device", "no CUDA GPU", "--device cpu"],
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")),
    (["bench", "--device", "cuda:99"], ["--device", "cuda:99: this machine has", "--device cpu"]),
    (["crf-search", "deeplab_v1", "--device", ""], ["--device", "unknown device ''"]),
    (["run", "deeplab_v1", "--seeds", "a"], ["--seeds", "expected an integer, got 'a'"]),
    (["run", "deeplab_v1", "--seeds", "-1"], ["--seeds", "at least 0, got -1"]),
    (["run", "deeplab_v1", "--seeds", "0,1,0"], ["--seeds", "twice"]),
    (["run", "deeplab_v1", "--eval-batch", "0"], ["--eval-batch", "at least 1, got 0"]),
    (["run", "deeplab_v1", "--precision", "fp16"], ["--precision", "invalid choice: 'fp16'"]),
    (["compare", "deeplab_v1", "--baseline", "fcn8s", "--workers", "-1"], ["--workers", "at least 0, got -1"]),
    (["compare", "deeplab_v1", "--baseline", "fcn8s", "--resamples", "0"], ["--resamples", "at least 1"]),
    (["compare", "deeplab_v1", "--baseline", ""], ["--baseline", "names no method"]),
    (["bench", "--steps", "-2"], ["--steps", "at least 1, got -2"]),
    (["bench", "--eval-images", "0"], ["--eval-images", "at least 1"]),
    (["bench", "--eval-batch", "x"], ["--eval-batch", "expected an integer"]),
    (["bench", "--methods", ","], ["--methods", "names no method"]),
    (["crf-search", "deeplab_v1", "--images", "0"], ["--images", "at least 1"]),
    (["rf", "--dilations", "1,2", "--kernel", "0"], ["--kernel", "at least 1"]),
    (["evaluate", "--pred", "p", "--gt", "g", "--num-classes", "-3"], ["--num-classes", "at least 2, got -3"]),
    (["evaluate", "--pred", "p", "--gt", "g", "--num-classes", "256"], ["--num-classes", "at most 255"]),
])
def test_bad_arguments_are_argparse_errors(capsys, tmp_path, args, words):
    assert_one_line_error(*run_main(capsys, *args), *words)
    assert not (tmp_path / "cache").exists()


def test_an_unknown_crf_normalisation_names_the_field_and_the_choices(capsys):
    assert_one_line_error(*run_main(capsys, "run", "deeplab_v1+crf", "--set", "crf_normalisation=sym"),
                          "crf_normalisation='sym'", "after or symmetric")


@pytest.mark.parametrize(("args", "words"), [
    (["run", "--all", "deeplab_v1"], ["pass either --all or method names", "deeplab_v1"]),
    (["run", "deeplab_v1", "--import", "no_such_module_x"], ["--import no_such_module_x", "PYTHONPATH"]),
    (["bench", "--methods", "deeplab_v1,nosuch"], ["--methods", "no recipe for nosuch", "deeplab_v1, fcn16s"]),
])
def test_mistaken_names_are_one_line(capsys, tmp_path, args, words):
    assert_one_line_error(*run_main(capsys, *args), *words)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(("source", "words"), [
    ("import no_such_dependency_x\n", ["--import broken_heads", "imports 'no_such_dependency_x'", "not installed"]),
    ("x = (\n", ["--import broken_heads failed at", "broken_heads.py:1", "SyntaxError"]),
    ("\n\nraise RuntimeError('boom')\n", ["failed at", "broken_heads.py:3", "RuntimeError: boom"]),
    ("import sys\nsys.exit(0)\n", ["--import broken_heads", "sys.exit(0)"]),
])
def test_an_import_that_fails_inside_the_module_says_where(capsys, tmp_path, monkeypatch, source, words):
    """``--import`` of a module that exists but fails: one line naming its file, line and error."""
    (tmp_path / "broken_heads.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    status, err = run_main(capsys, "run", "deeplab_v1", "--import", "broken_heads")
    assert_one_line_error(status, err, *words)


def test_a_registered_builder_that_raises_is_named(tmp_path):
    """In a subprocess: the registry of this process must not keep the broken method."""
    (tmp_path / "raising_heads.py").write_text(
        "import methods\n\n"
        "@methods.register('raiser', paper='none')\n"
        "def raiser(num_classes=21, **options):\n"
        "    raise ValueError('nope')\n")
    done = subprocess.run([sys.executable, "-m", "benchmarks", "list", "--import", "raising_heads"], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}, capture_output=True,
                          text=True, timeout=120)
    assert_one_line_error(done.returncode, done.stderr, "method 'raiser' could not be built", "ValueError: nope",
                          "raising_heads")


@pytest.mark.parametrize("name", ["", "../x", "my_heads.py", "/abs/heads"])
def test_import_takes_module_names_not_paths(capsys, name):
    status, err = run_main(capsys, "list", "--import", name)
    assert_one_line_error(status, err, "--import takes a module name")


def test_check_without_records_says_where_it_looked(capsys, tmp_path):
    status, err = run_main(capsys, "check", "--results", tmp_path / "empty")
    assert_one_line_error(status, err, f"no records under {tmp_path / 'empty' / 'records'}", "run")


def label_folders(root: Path) -> tuple[Path, Path]:
    """``pred/`` and ``gt/`` with one 4x4 label map each, of the same stem."""
    folders = root / "pred", root / "gt"
    for folder in folders:
        folder.mkdir()
        Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4) % 3, mode="L").save(folder / "a.png")
    return folders


def test_evaluate_refuses_to_score_ground_truth_against_itself(capsys, tmp_path):
    _, gt = label_folders(tmp_path)
    (tmp_path / "link").symlink_to(gt)
    status, err = run_main(capsys, "evaluate", "--pred", tmp_path / "link", "--gt", gt)
    assert_one_line_error(status, err, "--pred and --gt are the same folder", "always 100")


def run_process(args: list[object], timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m benchmarks ARGS`` in a fresh process (in the environment of ``no_data``)."""
    return subprocess.run([sys.executable, "-m", "benchmarks", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("folder", ["pred", "gt"])
def test_evaluate_does_not_hang_on_a_named_pipe(tmp_path, folder):
    """A FIFO named like a label map would block ``open`` forever: only regular files are read."""
    pred, gt = label_folders(tmp_path)
    (tmp_path / folder / "a.png").unlink()
    os.mkfifo(tmp_path / folder / "a.png")
    result = run_process(["evaluate", "--pred", pred, "--gt", gt], timeout=60)
    assert_one_line_error(result.returncode, result.stderr, f"{tmp_path / folder / 'a.png'} is not a regular file",
                          "move it out")


def test_convert_caffe_never_writes_over_its_input_or_a_non_file(tmp_path, capsys):
    """``convert-caffe FILE --out FILE`` once replaced the source .caffemodel with the converted
    state dict, exit 0 (issue 26): an output that is the input, or exists and is not a regular
    file, is refused before any work and the input is left byte for byte."""
    golden = Path(__file__).parent / "data" / "caffe-oracle" / "train" / "fcn32s" / "initial.caffemodel"
    source = tmp_path / "initial.caffemodel"
    source.write_bytes(golden.read_bytes())
    options = ["--method", "fcn32s", "--option", "width=0.03125"]
    for out in (source, tmp_path / "." / "initial.caffemodel", tmp_path):
        assert main(["convert-caffe", str(source), *options, "--out", str(out)]) != 0
        message = capsys.readouterr().err.strip()
        assert len(message.splitlines()) == 1 and str(out) in message, message
    assert source.read_bytes() == golden.read_bytes()
    assert main(["convert-caffe", str(source), *options, "--out", str(tmp_path / "converted.pt")]) == 0


def test_weights_holding_nan_are_refused_with_the_tensor_named(tmp_path, capsys, small_voc):
    """``score`` of weights holding NaN once wrote a ``released`` record (mIoU 7.42, issue 26): the
    command stops before scoring, naming the tensor, and writes no record."""
    import methods

    state = methods.create("fcn32s", width=1 / 16).state_dict()
    state["fc7.weight"][0, 0, 0, 0] = float("nan")
    weights = tmp_path / "nan.pt"
    torch.save(state, weights)
    data = small_voc(tmp_path / "voc", train=1, val=1)
    results = tmp_path / "results"
    assert main(["score", "fcn32s", "--weights", str(weights), "--option", "width=0.0625", "--data", str(data),
                 "--results", str(results)]) != 0
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and "fc7.weight" in message and "NaN" in message, message
    assert not list(results.rglob("*.json"))
