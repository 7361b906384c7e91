"""Groups by identity (issue 23, item 1): records that differ only in the embedded generator's
version, or only in the protocol version, are never pooled by ``report``, ``check`` or the claims."""

import json

import pytest
from record_files import make_record, write_record_files

from benchmarks.check import check_records, load_references, summary_line
from benchmarks.compare import paired_difference
from benchmarks.data.voc import DataError
from benchmarks.groups import group_records, recipe_rows
from benchmarks.recipes import get_recipe
from benchmarks.records import RecordError, load_records
from benchmarks.report import claims_table, write_report


def embedded(version: int) -> dict:
    return {"name": "embedded", "split": "val", "images": 2, "list_sha256": "b" * 64,
            "generator": {"version": version, "fingerprint": "f73550f2b1c8", "files_sha256": "c" * 64}}


# (generator version, protocol version, seeds, fcn8s mIoU, fcn32s mIoU): FCN-8s 10 points above
# FCN-32s in the first group, 10 below in the second, 20 above in the third
GROUPS = [(4, 1, (0, 1, 2), (60.0, 61.0, 62.0), (50.0, 51.0, 52.0)),
          (5, 1, (0, 1, 2), (40.0, 41.0, 42.0), (50.0, 51.0, 52.0)),
          (5, None, (3, 4, 5), (70.0, 71.0, 72.0), (50.0, 51.0, 52.0))]


@pytest.fixture
def results(tmp_path):
    for version, protocol, seeds, fcn8s, fcn32s in GROUPS:
        for method, mious in (("fcn8s", fcn8s), ("fcn32s", fcn32s)):
            for seed, miou in zip(seeds, mious, strict=True):
                record, counts = make_record(method, miou, seed=seed, profile="quick", dataset=embedded(version),
                                             comparable_to_paper=False, comparable_reason="embedded",
                                             protocol_version=protocol,
                                             trained_weights_sha256=f"{version}{protocol}{seed}{method}".encode().hex()
                                             .ljust(64, "0")[:64])
                if protocol is None:
                    del record["protocol_version"]
                name = f"seed{seed}-v{version}" + ("" if protocol else "-old")
                write_record_files(tmp_path / "records" / "quick-embedded" / method / f"{name}.json", record, counts)
    return tmp_path


def test_three_groups_each_named_by_its_difference(results):
    groups = group_records(load_records(results))
    assert [len(g.records) for g in groups] == [6, 6, 6]
    assert [{r["dataset"]["generator"]["version"] for r in g.records} for g in groups] == [{4}, {5}, {5}]
    differences = sorted(g.difference for g in groups if g.difference)
    assert len(differences) == 2 and any("generator_version 5 (there 4)" in d for d in differences)
    assert any("protocol_version not recorded" in d for d in differences)


def test_claims_are_decided_within_a_group(results):
    verdicts = [{row["claim"]: (round(row["mean"], 1), row["seeds"]) for row in claims_table(g.records)}
                for g in group_records(load_records(results))]
    means = sorted(v["FCN-8s beats FCN-32s"] for v in verdicts)
    assert means == [(-10.0, 3), (10.0, 3), (20.0, 3)]  # pooled, it would be 9 seeds
    with pytest.raises(ValueError, match="records of 3 groups"):
        claims_table(load_records(results))


def test_check_gives_one_verdict_per_group_method_and_reference(results):
    verdicts = [v for v in check_records(load_records(results), load_references())
                if v["reference"] == "fcn_cvpr_table2"]
    assert sorted((v["method"], len(v["seeds"]), v["mean"]) for v in verdicts) == [
        ("fcn32s", 3, 51.0), ("fcn32s", 3, 51.0), ("fcn32s", 3, 51.0),
        ("fcn8s", 3, 41.0), ("fcn8s", 3, 61.0), ("fcn8s", 3, 71.0)]
    assert len({v["group"] for v in verdicts}) == 3


def test_report_writes_one_table_per_group(results, capsys):
    write_report(results, results / "reports", results / "runs")
    tables = sorted((results / "tables").glob("quick-embedded-*-summary.csv"))
    assert len(tables) == 3
    rows = sorted(line.split(",")[:3] for table in tables for line in table.read_text().splitlines()[1:])
    assert rows == sorted([["fcn32s", "3", "51.0"]] * 3 + [["fcn8s", "3", "61.0"], ["fcn8s", "3", "41.0"],
                                                         ["fcn8s", "3", "71.0"]])
    report = (results / "reports" / "report.md").read_text()
    assert report.count("differs from group") == 2 and "nothing is averaged across groups" in report


def test_two_recipes_of_one_method_are_two_rows(results):
    recipe = get_recipe("fcn8s", "quick").as_dict()
    for seed in (0, 1, 2):
        path = results / "records" / "quick-embedded" / "fcn8s" / f"seed{seed}-v4.json"
        changed = {"iterations": 7, "lr": 0.5} if seed == 0 else {}
        path.write_text(json.dumps({**json.loads(path.read_text()), "recipe": {**recipe, **changed}}))
    (group, *_) = group_records(load_records(results))
    rows, notes = recipe_rows(group.records)
    assert sorted(len(items) for items in rows.values()) == [1, 2, 3]
    assert notes == [notes[0]] and "they differ in iterations, lr" in notes[0]
    claim = next(row for row in claims_table(group.records) if row["claim"] == "FCN-8s beats FCN-32s")
    assert claim["verdict"].startswith("not decided here")


def test_compare_pairs_only_valid_records_of_one_group(results):
    folder = results / "records" / "quick-embedded"
    better = paired_difference(folder / "fcn8s" / "seed0-v4.json", folder / "fcn32s" / "seed0-v4.json", 200)
    assert better["difference"] == pytest.approx(0.10, abs=1e-3)  # 60 vs 50 on the same two images
    with pytest.raises(DataError, match="different groups"):
        paired_difference(folder / "fcn8s" / "seed0-v5.json", folder / "fcn32s" / "seed0-v4.json", 200)
    with pytest.raises(DataError, match="different groups"):
        paired_difference(folder / "fcn8s" / "seed3-v5-old.json", folder / "fcn32s" / "seed0-v5.json", 200)
    edited = folder / "fcn8s" / "seed1-v4.json"
    edited.write_text(json.dumps({**json.loads(edited.read_text()), "metrics": {"miou": 0.9}}))
    with pytest.raises(RecordError, match=r"metrics\.pixel_acc is missing"):
        paired_difference(edited, folder / "fcn32s" / "seed1-v4.json", 200)


def test_check_pools_seeds_into_one_verdict_with_an_interval(tmp_path):
    """DeepLab's 62.25 +- 1.0 (Table 1a): three seeds at 62.0, 62.3, 62.5 reproduce it and the 95%
    interval (mean 62.27, sd 0.252, t 4.303: +-0.63) lies inside the band; one seed cannot decide."""
    for seed, miou in enumerate((62.0, 62.3, 62.5)):
        write_record_files(tmp_path / "records" / "paper-voc2012" / "deeplab_v1" / f"seed{seed}.json",
                           *make_record("deeplab_v1", miou, seed=seed))
    (verdict,) = [v for v in check_records(load_records(tmp_path), load_references())
                  if v["reference"] == "deeplab_v1_table1a"]
    assert verdict["verdict"] == "reproduced" and verdict["decided"] and verdict["seeds"] == [0, 1, 2]
    assert verdict["mean"] == pytest.approx(62.27, abs=0.01)
    assert verdict["high"] - verdict["mean"] == pytest.approx(4.303 * 0.2517 / 3 ** 0.5, abs=0.02)
    verdicts = check_records(load_records(tmp_path), load_references())
    assert summary_line(verdicts) == ("papers' numbers: 1 held, 0 missed, 0 not comparable; design note (not "
                                      "authoritative): 0 held, 1 missed, 0 not comparable")
    one = check_records([load_records(tmp_path)[0]], load_references())
    assert [(v["verdict"], v["decided"]) for v in one if v["reference"] == "deeplab_v1_table1a"] == \
        [("reproduced", False)]
