"""Yu & Koltun's Table 3 (ICLR 2016): the COCO-pretrained recipes (Sec 5), the coco_pretraining
condition their records carry for `check`, a two-stage run end to end on a small embedded
dataset with its COCO-format extra set, and the table in the paper's layout in the report."""

import json

import torch

from benchmarks.check import check_records, load_references
from benchmarks.data.datasets import resolve_dataset
from benchmarks.data.embedded_scenes import EmbeddedConfig
from benchmarks.distributed import Distributed
from benchmarks.recipes import get_recipe
from benchmarks.report import paper_tables, write_report
from benchmarks.resolve import RunPlan, conditions
from benchmarks.run import run

TINY = ("iterations=3", "batch_size=2", "log_every=1", "checkpoint_every=2")
PAPER_TABLE3 = {"frontend_coco": 69.8, "frontend_coco+crf": 71.6, "frontend_coco+crfrnn": 72.5,
                "context_basic_coco": 71.3, "context_basic_coco+crf": 72.7, "context_basic_coco+crfrnn": 73.1,
                "context_large_coco": 72.1, "context_large_coco+crf": 73.3, "context_large_coco+crfrnn": 73.9}


def test_paper_recipes_follow_section_5():
    stage1, stage2 = get_recipe("frontend_coco_stage1", "paper"), get_recipe("frontend_coco", "paper")
    # stage 1: VOC + COCO, batch 14, 100k iterations at 1e-3 then 40k at 1e-4
    assert (stage1.train_split, stage1.extra_train_split, stage1.batch_size) == ("trainaug", "coco", 14)
    assert (stage1.iterations, stage1.lr, stage1.schedule, stage1.step_size, stage1.gamma) == \
        (140_000, 1e-3, "step", 100_000, 0.1)
    # stage 2: VOC only, 50k iterations at 1e-5, from stage 1
    assert (stage2.train_split, stage2.extra_train_split) == ("trainaug", None)
    assert stage2.init_from == "frontend_coco_stage1"
    assert (stage2.iterations, stage2.lr, stage2.schedule, stage2.batch_size) == (50_000, 1e-5, "fixed", 14)
    for name in ("context_basic", "context_large"):
        coco, voc = get_recipe(f"{name}_coco", "paper"), get_recipe(name, "paper")
        assert (coco.init_from, coco.architecture, coco.extra_train_split) == ("frontend_coco", name, None)
        assert (coco.iterations, coco.lr, coco.batch_size) == (voc.iterations, voc.lr, voc.batch_size)
    assert {stage1.architecture, stage2.architecture} == {"frontend"}


def test_coco_pretraining_is_inherited_through_init_from():
    plan = RunPlan(profile="quick", seeds=(0,))
    coco = lambda plan, method: conditions(plan, method)["coco_pretraining"]  # noqa: E731
    assert coco(plan, "context_large_coco") and coco(plan, "frontend_coco_stage1")
    assert not coco(plan, "context_large")
    without = RunPlan(profile="quick", seeds=(0,), overrides=("extra_train_split=none",))
    assert not coco(without, "context_large_coco")


def test_the_two_stage_recipe_runs_on_the_embedded_coco_set(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGREPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SEGREPRO_DATA", raising=False)
    source = resolve_dataset(None, EmbeddedConfig(seed=7, train_images=6, val_images=3, crf_holdout_images=1,
                                                  coco_images=8, height=64, width=80))
    plan = RunPlan(profile="quick", seeds=(0,), overrides=TINY, results=tmp_path / "results", runs=tmp_path / "runs")
    lines: list[str] = []
    (path,) = run(["frontend_coco"], source, plan, Distributed(device=torch.device("cpu")), lines.append).values()
    record = json.loads(path.read_text())
    assert record["conditions"] == {"coco_pretraining": True, "heavy_momentum_solver": False}
    assert record["init_from"] == "frontend_coco_stage1"
    assert record["extra_train_dataset"] is None and record["base_method"] == "frontend_coco"
    (stage1,) = (tmp_path / "runs" / "quick-embedded" / "frontend_coco_stage1").glob("seed0-*/log.csv")
    assert len(stage1.read_text().splitlines()) == 1 + 3  # trained on trainaug + coco, not scored
    assert not (tmp_path / "results" / "records" / "quick-embedded" / "frontend_coco_stage1").exists()
    [verdict] = [v for v in check_records([{**record, "path": str(path)}], load_references())
                 if v["reference"] == "yu_koltun_table3"]
    assert verdict["verdict"] == "not comparable" and "needs coco_pretraining" not in verdict["reason"]
    path.write_text(json.dumps({**record, "overrides": []}))  # as the recipe's own record: a cell of the table
    write_report(tmp_path / "results", tmp_path / "reports", tmp_path / "runs")
    report = (tmp_path / "reports" / "report.md").read_text()
    assert "Table 3, VOC 2012 val, front end pretrained on Microsoft COCO (Sec 5): the paper's layout" in report
    assert "not comparable to the paper's numbers beside them" in report
    table = (tmp_path / "results" / "tables" / "quick-embedded-yu_koltun_table3.csv").read_text().splitlines()
    assert table[1].startswith(f"front end,{100 * record['metrics']['miou']:.2f},69.8,not run,71.6,not run,72.5")


def _record(method, miou, seed=0, overrides=()):
    return {"method": method, "seed": seed, "metrics": {"miou": miou / 100}, "overrides": list(overrides)}


def test_table3_in_the_papers_layout():
    references = load_references()
    assert next(r for r in references if r["id"] == "yu_koltun_table3")["miou"] == PAPER_TABLE3
    records = [_record("frontend_coco", 40.0), _record("frontend_coco", 42.0, seed=1),
               _record("context_large_coco+crf", 50.5), _record("context_basic_coco", 99.0, overrides=["lr=1"]),
               _record("frontend", 30.0)]
    [(reference, table)] = paper_tables(records, references)
    assert reference["id"] == "yu_koltun_table3"
    assert table[""].tolist() == ["front end", "+ basic", "+ large"]
    assert table["none"].tolist() == ["41.00 (2 seeds)", "not run", "not run"]  # an overridden record is not a cell
    assert table["dense CRF"].tolist() == ["not run", "not run", "50.50"]
    assert table["CRF-RNN"].tolist() == ["not run"] * 3
    assert table["none, paper"].tolist() == [69.8, 71.3, 72.1]
    assert table["dense CRF, paper"].tolist() == [71.6, 72.7, 73.3]
    assert table["CRF-RNN, paper"].tolist() == [72.5, 73.1, 73.9]
    assert paper_tables([_record("frontend", 30.0)], references) == []
