"""Records as validated data (issue 26, item 1): each example of "records are trusted as written"
is refused with its first reason by ``check`` (an error) and left out by ``report`` (one line);
duplicates are never pooled; ``run NAME+crf`` refuses a stored CRF search it cannot use."""

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
from record_files import make_record, write_record_files, write_valid_record

from benchmarks.cli import main
from benchmarks.crf.dense_crf import CRFParams
from benchmarks.recipes import get_recipe
from benchmarks.records import RecordError, load_records, scan_records
from benchmarks.run import searched_crf

EMBEDDED = {"name": "embedded", "split": "val", "images": 2, "list_sha256": "b" * 64,
            "generator": {"version": 5, "fingerprint": "f73550f2b1c8", "files_sha256": "c" * 64}}


def edited(record: dict, change: dict) -> dict:
    """``record`` with dotted keys of ``change`` set (a value of ``...`` deletes the key)."""
    record = json.loads(json.dumps(record))
    for key, value in change.items():
        *parents, name = key.split(".")
        parent = record
        for part in parents:
            parent = parent[part]
        if value is ...:
            del parent[name]
        else:
            parent[name] = value
    return record


CASES = [  # (change to a valid deeplab_v1 record at 62.25 mIoU, words of the reason)
    ({"comparable_to_paper": ...}, "comparable_to_paper is missing"),
    ({"dataset.split": ...}, "dataset.split is missing"),
    ({"environment": {"uv_lock_sha256": None, "packages": "torch 2.5"}}, "environment.packages 'torch 2.5' is not"),
    ({"environment": {"uv_lock_sha256": 12345, "packages": {}}}, "environment.uv_lock_sha256 12345 is not"),
    ({"metrics.per_class_iou": "0.5, 0.7"}, "metrics.per_class_iou '0.5, 0.7' is not"),
    ({"metrics.per_class_iou": ["nan"] * 21}, "metrics.per_class_iou ['nan'"),
    ({"crf": "dense"}, "crf 'dense' is not"),
    ({"metrics.miou": 0.99}, "metrics.miou 0.99 is not the mIoU its counts give (0.62"),
    ({"comparable_to_paper": "false"}, "comparable_to_paper 'false' is not true or false"),
    ({"dataset": EMBEDDED}, "comparable_to_paper is true for a record of the embedded generated dataset"),
    ({"crf_search": [1, 2]}, "crf_search [1, 2] is not an object"),
    ({"recipe": {**get_recipe("deeplab_v1", "quick").as_dict(), "iterations": "many"}},
     "recipe: recipe deeplab_v1 (quick): iterations='many' is not allowed"),
    ({"recipe": {"method": "deeplab_v1"}}, "recipe: Recipe.__init__() missing"),
    ({"schema": 99}, "schema 99 is not one of (1, 2)"),
    ({"created": "yesterday"}, "created 'yesterday' is not an ISO 8601 time"),
    ({"created": "2026-12-04T04:47:29"}, "created '2026-12-04T04:47:29' is not an ISO 8601 time with its UTC offset"),
    ({"wall_time_s": {"train": -5.0}}, "wall_time_s {'train': -5.0} is not an object of seconds >= 0"),
    ({"wall_time_s": {"train": "long"}}, "wall_time_s {'train': 'long'} is not"),
]


def run_main(capsys, *args):
    status = main([str(a) for a in args])
    return status, capsys.readouterr()


@pytest.mark.parametrize(("change", "words"), CASES)
def test_check_refuses_and_report_leaves_out_a_record_that_fails_the_schema(capsys, tmp_path, change, words):
    write_valid_record(tmp_path, "fcn8s", 62.2)
    path = write_valid_record(tmp_path, "deeplab_v1", 62.25)
    path.write_text(json.dumps(edited(json.loads(path.read_text()), change)))
    status, out = run_main(capsys, "check", "--results", tmp_path)
    assert status == 2 and out.err.startswith(f"error: record {path} is not a valid record (") and words in out.err
    assert len(out.err.strip().splitlines()) == 1
    status, out = run_main(capsys, "report", "--results", tmp_path, "--reports", tmp_path / "reports")
    assert status == 0 and out.err.strip().splitlines() == [line for line in out.err.strip().splitlines()
                                                            if line.startswith(f"left out: record {path}")]
    assert words in out.err
    assert "deeplab_v1" not in (tmp_path / "tables" / "paper-voc2012-summary.csv").read_text()


def test_report_of_only_invalid_records_says_they_were_left_out(capsys, tmp_path):
    """With its one record invalid, report said "no records under ..." right after the line that
    left it out (re-probe 3 of issue 26)."""
    path = write_valid_record(tmp_path, "deeplab_v1", 62.25)
    path.write_text(json.dumps({**json.loads(path.read_text()), "schema": 99}))
    status, out = run_main(capsys, "report", "--results", tmp_path, "--reports", tmp_path / "reports")
    left_out, error = out.err.strip().splitlines()
    assert status == 2 and left_out.startswith(f"left out: record {path} is not a valid record (schema 99")
    assert error == (f"error: no valid records under {tmp_path / 'records'} (1 left out above); run `python -m "
                     "benchmarks run --all` first")


def test_json_nested_too_deeply_is_refused_not_a_traceback(tmp_path):
    path = write_valid_record(tmp_path, "deeplab_v1", 62.25)
    path.write_text(path.read_text()[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(RecordError, match="not JSON: RecursionError"):
        load_records(tmp_path)


def test_the_committed_records_pass_the_schema():
    records, problems = scan_records(Path(__file__).parents[1] / "results")
    assert problems == [] and records


@pytest.mark.parametrize("how", ["copy under another name", "same run relabelled seed 1"])
def test_a_duplicate_record_is_reported_never_pooled(capsys, tmp_path, how):
    path = write_valid_record(tmp_path, "deeplab_v1", 62.25)
    if how == "copy under another name":
        copy = path.with_name("seed0-copy.json")
        shutil.copy(path, copy)
    else:
        copy = path.with_name("seed1.json")
        copy.write_text(json.dumps({**json.loads(path.read_text()), "seed": 1}))
    shutil.copy(path.with_suffix(".npz"), copy.with_suffix(".npz"))
    records, problems = scan_records(tmp_path)
    ((kept,),) = [[r["path"] for r in records]]
    left_out = str(copy) if kept == str(path) else str(path)
    assert len(problems) == 1 and problems[0].startswith(f"record {left_out} duplicates {kept}")
    assert ("another seed" in problems[0]) == (how != "copy under another name")
    status, out = run_main(capsys, "check", "--results", tmp_path)
    assert status == 2 and " duplicates " in out.err and str(copy) in out.err
    status, out = run_main(capsys, "report", "--results", tmp_path, "--reports", tmp_path / "reports")
    assert status == 0 and "left out: record" in out.err
    summary = (tmp_path / "tables" / "paper-voc2012-summary.csv").read_text().splitlines()
    assert summary[1].startswith("deeplab_v1,1,62.25")  # one seed, not two with sd 0


BEST = dataclasses.asdict(CRFParams())


@pytest.mark.parametrize(("search", "words"), [
    ({"best": BEST, "images": 4, "split": "crfholdout"}, "crf_search.trained_weights_sha256 is missing"),
    ({"best": {**BEST, "sharpness": 2}, "images": 4, "split": "crfholdout", "trained_weights_sha256": "d" * 64},
     "crf_search.best has unknown keys ['sharpness']"),
    ({"best": {**BEST, "w1": math.nan}, "images": 4, "split": "crfholdout", "trained_weights_sha256": "d" * 64},
     "w1=nan is out of range"),
    ([BEST], "crf_search [{"),
])
def test_run_crf_refuses_a_stored_crf_search_it_cannot_use(tmp_path, search, words):
    record, counts = make_record("deeplab_v1", 62.25, crf_search=search)
    path = write_record_files(tmp_path / "deeplab_v1.json", record, counts)
    with pytest.raises(RecordError, match="is not a valid record") as error:
        searched_crf(path, "d" * 64, get_recipe("deeplab_v1", "quick"))
    assert words in str(error.value)


def test_run_crf_uses_a_valid_stored_crf_search(tmp_path):
    search = {"best": {**BEST, "w1": 4.0}, "images": 4, "split": "crfholdout", "trained_weights_sha256": "d" * 64}
    record, counts = make_record("deeplab_v1", 62.25, crf_search=search)
    path = write_record_files(tmp_path / "deeplab_v1.json", record, counts)
    params, source = searched_crf(path, "d" * 64, get_recipe("deeplab_v1", "quick"))
    assert params == CRFParams(**{**BEST, "w1": 4.0}) and source.startswith("crf-search on 4 crfholdout images")


def test_counts_that_are_not_an_npz_are_one_line(capsys, tmp_path):
    """Garbage bytes in a record's `.npz` ended `check` and `report` in BadZipFile tracebacks (re-probe
    of issue 26)."""
    path = write_valid_record(tmp_path, "deeplab_v1", 62.25)
    path.with_suffix(".npz").write_bytes(b"PK\x03\x04garbage" * 10)  # a zip signature, then garbage
    status, out = run_main(capsys, "check", "--results", tmp_path)
    assert status == 2 and "do not read (BadZipFile)" in out.err and "Traceback" not in out.err
    status, out = run_main(capsys, "report", "--results", tmp_path, "--reports", tmp_path / "reports")
    assert status == 2 and "do not read (BadZipFile)" in out.err and "Traceback" not in out.err
