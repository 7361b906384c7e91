"""``python -m benchmarks report``: tables (CSV, Markdown) under ``results/`` and a Markdown report
with figures under ``reports/``, regenerated from the records alone (plus training logs where
the run folders are present); the pictures are drawn by ``benchmarks.report_figures``."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.check import check_records, load_references
from benchmarks.data.voc import VOC_CLASSES
from benchmarks.groups import Group, group_records, recipe_rows, row_label
from benchmarks.records import hardware_summary, scan_records, software_summary, weights_summary
from benchmarks.report_figures import pictures, receptive_field_figure
from benchmarks.stats import seed_interval, seeds_to_decide

__all__ = ["CLAIMS", "claims_table", "paper_tables", "write_report"]

CLAIMS = (
    ("FCN-8s beats FCN-32s", "fcn8s", "fcn32s"),
    ("the large context module beats the front end", "context_large", "frontend"),
    ("the basic context module beats the front end", "context_basic", "frontend"),
    ("the CRF improves FCN-8s", "fcn8s+crf", "fcn8s"),
    ("the CRF improves DeepLab v1", "deeplab_v1+crf", "deeplab_v1"),
    ("the CRF improves the front end", "frontend+crf", "frontend"),
    ("the CRF improves the basic context module", "context_basic+crf", "context_basic"),
    ("the CRF improves the large context module", "context_large+crf", "context_large"),
    ("the large context module beats the front end (COCO-pretrained, Table 3)", "context_large_coco", "frontend_coco"),
    ("the basic context module beats the front end (COCO-pretrained, Table 3)", "context_basic_coco", "frontend_coco"),
    ("the CRF improves the front end (Table 3)", "frontend_coco+crf", "frontend_coco"),
    ("the CRF improves the large context module (Table 3)", "context_large_coco+crf", "context_large_coco"),
    ("CRF-RNN beats the dense CRF on the large context module (Table 3)", "context_large_coco+crfrnn",
     "context_large_coco+crf"),
)
"""The papers' qualitative claims as (statement, better, worse)."""

NOT_COMPARABLE = ("**Not comparable to the papers:** these numbers come from the embedded generated dataset and/or "
                  "the shortened `quick` profile (reduced width, no ImageNet weights).")


def summary_table(records: list[dict[str, object]]) -> pd.DataFrame:
    """One row per method and effective recipe (``groups.recipe_rows``) of one group's records."""
    rows, _ = recipe_rows(records)
    table = []
    for method, items in sorted(rows.items()):
        mious = [100 * r["metrics"]["miou"] for r in items]
        table.append({"method": method, "seeds": len(items), "mIoU": round(float(np.mean(mious)), 2),
                      "mIoU sd": round(float(np.std(mious, ddof=1)), 2) if len(items) > 1 else None,
                      "pixel acc": round(100 * float(np.mean([r["metrics"]["pixel_acc"] for r in items])), 2),
                      "mean acc": round(100 * float(np.mean([r["metrics"]["mean_acc"] for r in items])), 2),
                      "fwIoU": round(100 * float(np.mean([r["metrics"]["fwiou"] for r in items])), 2),
                      "comparable": all(r["comparable_to_paper"] for r in items),
                      "weights": "; ".join(dict.fromkeys(weights_summary(r) for r in items))})
    return pd.DataFrame(table)


def per_class_table(records: list[dict[str, object]]) -> pd.DataFrame:
    rows = {label: [[np.nan if v is None else 100 * v for v in r["metrics"]["per_class_iou"]] for r in items]
            for label, items in recipe_rows(records)[0].items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class absent on every seed stays NaN
        means = {m: np.nanmean(np.array(v), axis=0).round(1) for m, v in sorted(rows.items())}
    return pd.DataFrame(means, index=list(VOC_CLASSES))


def claims_table(records: list[dict[str, object]]) -> list[dict[str, object]]:
    """Each claim: per-seed paired mIoU differences (better − worse, same seed) of the recipes'
    own records (no overrides) of one group and the 95% t interval; a CRF claim pairs only
    records of the same trained weights. ``held`` when the whole interval is above 0, ``not held``
    when below, else ``undecided``; ``not decided here`` when a side's records hold several
    recipes. ``seeds to decide``: how many seeds would decide the claim if the differences kept
    their mean and sd (``stats.seeds_to_decide``). Claims about methods of which neither side was
    run are left out. Records of several groups (``groups.group_records``) are a ``ValueError``:
    they are never paired."""
    if len(groups := group_records(records)) > 1:
        raise ValueError(f"claims_table got records of {len(groups)} groups; pass one group's records")
    rows_of, _ = recipe_rows(records)
    by_key = {(r["method"], r["seed"]): r for label, items in rows_of.items() for r in items if label == r["method"]}
    split = {r["method"] for label, items in rows_of.items() for r in items if label != row_label(r)}
    rows = []
    for statement, better, worse in CLAIMS:
        if split & {better, worse}:
            several = ", ".join(sorted(split & {better, worse}))
            rows.append({"claim": statement, "better": better, "worse": worse, "mean": None, "low": None,
                         "high": None, "seeds": 0,
                         "verdict": f"not decided here: {several} has records of several recipes (one row each)",
                         "seeds to decide": None})
            continue
        if not any(method in (better, worse) for method, _ in by_key):
            continue
        def paired(seed: int, better: str = better, worse: str = worse) -> bool:
            if (better, seed) not in by_key or (worse, seed) not in by_key:
                return False
            first, second = by_key[(better, seed)], by_key[(worse, seed)]
            return first.get("base_method") != worse or \
                first.get("trained_weights_sha256") == second.get("trained_weights_sha256")

        seeds = sorted(s for (m, s) in by_key if m == better and paired(s))
        differences = [100 * (by_key[(better, s)]["metrics"]["miou"] - by_key[(worse, s)]["metrics"]["miou"])
                       for s in seeds]
        interval = seed_interval(differences)
        if interval["low"] is None:
            status = "not enough seeds" if seeds else "not run"
        elif interval["low"] > 0:
            status = "held"
        elif interval["high"] < 0:
            status = "not held (reversed)"
        else:
            status = "undecided (interval spans 0)"
        needed = seeds_to_decide(differences)
        rows.append({"claim": statement, "better": better, "worse": worse, **interval, "verdict": status,
                     "seeds to decide": needed if needed is not None else "> 100" if len(seeds) > 1 else None})
    return rows


def paper_tables(records: list[dict[str, object]],
                 references: list[dict[str, object]]) -> list[tuple[dict[str, object], pd.DataFrame]]:
    """Each reference set with a ``layout`` (``references.json``; Yu & Koltun's Table 3) as the
    paper lays it out: a row per network, a column per post-processing (cell = row method +
    column suffix), the mean mIoU over the seeds of the recipe's own records (no overrides) or
    "not run", and the paper's number beside. Sets with no cell run are left out."""
    measured = {label: [100 * r["metrics"]["miou"] for r in items] for label, items in recipe_rows(records)[0].items()
                if label == items[0]["method"]}
    tables = []
    for reference in references:
        layout = reference.get("layout")
        if not layout:
            continue
        cells = {f"{method}{suffix}" for _, method in layout["rows"] for _, suffix in layout["columns"]}
        if not cells & set(measured):
            continue
        rows = []
        for label, method in layout["rows"]:
            row: dict[str, object] = {"": label}
            for column, suffix in layout["columns"]:
                mious = measured.get(f"{method}{suffix}")
                seeds = f" ({len(mious)} seeds)" if mious and len(mious) > 1 else ""
                row[column] = f"{np.mean(mious):.2f}{seeds}" if mious else "not run"
                row[f"{column}, paper"] = reference["miou"].get(f"{method}{suffix}")
            rows.append(row)
        tables.append((reference, pd.DataFrame(rows)))
    return tables


def crf_settings(records: list[dict[str, object]]) -> pd.DataFrame:
    """One row per distinct (method, CRF parameters, source, backend) among the ``+crf`` records."""
    rows = {}
    for r in records:
        if r.get("crf"):
            crf = {"normalisation": "symmetric", **r["crf"]}  # records before the choice used pydensecrf's default
            params = ", ".join(f"{k} {v}" if isinstance(v, str) else f"{k} {v:g}" for k, v in crf.items())
            key = (r["method"], params, r.get("crf_source", "recipe"), r.get("crf_backend", "pydensecrf"))
            rows.setdefault(key, []).append(str(r["seed"]))
    return pd.DataFrame([{"method": m, "parameters": p, "from": src, "backend": b, "seeds": ",".join(seeds)}
                         for (m, p, src, b), seeds in sorted(rows.items())])


def write_report(results: Path, reports: Path, runs: Path, warn: Callable[[str], None] = print) -> list[Path]:
    """Regenerate ``results/tables/*`` and ``reports/report.md``; returns the files written. A
    file that is not a valid record, or duplicates another, is left out with one line to ``warn``."""
    records, problems = scan_records(results)
    for problem in problems:
        warn(f"left out: {problem}")
    if not records:
        left_out = f"valid records under {results / 'records'} ({len(problems)} left out above)" if problems else \
            f"records under {results / 'records'}"
        raise FileNotFoundError(f"no {left_out}; run `python -m benchmarks run --all` first")
    tables, written = results / "tables", []
    tables.mkdir(parents=True, exist_ok=True)
    reports.mkdir(parents=True, exist_ok=True)
    lines = ["# segrepro report", "", "Regenerated by `python -m benchmarks report` from the records under "
             "`results/records`.", ""]
    groups = group_records(records)
    for each in groups:
        siblings = sum(other.identity["name"] == each.identity["name"]
                       and other.identity["profile"] == each.identity["profile"] for other in groups)
        section, files = _group_section(each, siblings, tables, reports, runs)
        lines += section
        written += files
    lines += ["## Receptive fields (SPEC section 3)", "", f"![receptive field]({receptive_field_figure(reports)})", ""]
    verdicts = pd.DataFrame(check_records(records, load_references()))
    lines += ["## Check against the published numbers (one verdict per group, method and reference)", ""]
    if not verdicts.empty:
        lines += [verdicts.drop(columns=["records"]).to_markdown(index=False), ""]
    report = reports / "report.md"
    report.write_text("\n".join(lines))
    written.append(report)
    return written


def _group_section(each: Group, siblings: int, tables: Path, reports: Path, runs: Path
                   ) -> tuple[list[str], list[Path]]:
    """One group's tables (written under ``tables``) and its section of the report."""
    group, profile, dataset = each.records, each.identity["profile"], each.identity["name"]
    stem = f"{profile}-{dataset}" if siblings == 1 else f"{profile}-{dataset}-{each.key}"
    comparable = all(r["comparable_to_paper"] for r in group)
    summary, per_class = summary_table(group), per_class_table(group)
    summary.to_csv(tables / f"{stem}-summary.csv", index=False)
    per_class.to_csv(tables / f"{stem}-per-class.csv")
    markdown = summary.to_markdown(index=False)
    (tables / f"{stem}-summary.md").write_text(("" if comparable else NOT_COMPARABLE + "\n\n") + markdown + "\n")
    written = [tables / f"{stem}-summary.csv", tables / f"{stem}-per-class.csv", tables / f"{stem}-summary.md"]
    first = group[0]
    lines = [f"## Profile `{profile}`, dataset `{dataset}`{f' (group {each.key})' if siblings > 1 else ''}", "",
             f"Records pooled only within this group: {each.label}.", ""]
    if each.difference:
        lines += [f"This group {each.difference}; nothing is averaged across groups.", ""]
    lines += [f"{note}." for note in recipe_rows(group)[1]] + ([""] if recipe_rows(group)[1] else [])
    if not comparable:
        lines += [NOT_COMPARABLE, ""]
    software = "; ".join(f"{count} records: {summary}"
                         for summary, count in Counter(software_summary(r) for r in group).items())
    lines += [f"Evaluated on split `{first['dataset']['split']}` ({first['dataset']['images']} images); "
              f"hardware: {'; '.join(dict.fromkeys(hardware_summary(r) for r in group))}; weights: "
              f"{'; '.join(dict.fromkeys(weights_summary(r) for r in group))}.", "", f"Software: {software}.", "",
              markdown, "",
              "### The papers' qualitative claims", ""]
    claims = pd.DataFrame(claims_table(group))
    lines += [("" if comparable else "(Measured here, not comparable to the papers.)\n\n") +
              "Per-seed paired differences (better − worse) and their 95% t interval; *seeds to decide* "
              "projects how many seeds would put the interval clear of 0 if the differences kept their mean "
              "and sd.\n\n" + claims.to_markdown(index=False, floatfmt=".2f"), ""]
    for reference, table in paper_tables(group, load_references()):
        table.to_csv(tables / f"{stem}-{reference['id']}.csv", index=False)
        written.append(tables / f"{stem}-{reference['id']}.csv")
        lines += [f"### {reference['source']}: the paper's layout", "",
                  "Measured mIoU (%) beside the paper's; " + ("comparable records." if comparable else
                  "**measured here, not comparable to the paper's numbers beside them.**"), "",
                  table.to_markdown(index=False), ""]
    crf_rows = crf_settings(group)
    if not crf_rows.empty:
        lines += ["### Dense-CRF settings of the `+crf` records", "", crf_rows.to_markdown(index=False), ""]
    lines += ["### Per-class IoU", "", per_class.to_markdown(), ""]
    return lines + pictures(group, per_class, stem, reports, runs), written
