"""Progress you can watch: on a terminal, tqdm bars with rate and ETA for training (from the resume
iteration), feature caching, scoring and crf-search, and the log lines still arrive one per log
step; off a terminal, those lines alone, exactly as without bars."""

import io
import re
import sys

import numpy as np
import pytest
import torch

from benchmarks.crf_search import search
from benchmarks.data.datasets import DatasetSource
from benchmarks.data.embedded import embedded_root
from benchmarks.data.embedded_scenes import EmbeddedConfig
from benchmarks.distributed import Distributed
from benchmarks.evaluation import evaluate
from benchmarks.files import save_torch
from benchmarks.networks import build_model
from benchmarks.progress import bar, beside_bars
from benchmarks.recipes import apply_overrides, get_recipe
from benchmarks.train import train

SMALL = EmbeddedConfig(seed=3, train_images=8, val_images=4, crf_holdout_images=2, height=64, width=80)
TINY = ["iterations=4", "log_every=1", "checkpoint_every=2", "batch_size=2"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return DatasetSource("embedded", embedded_root(SMALL, tmp_path_factory.mktemp("cache")), False)


def _terminal(monkeypatch: pytest.MonkeyPatch) -> _Terminal:
    """stderr as a terminal, holding what the bars draw (set in the test itself: pytest resets
    sys.stderr after fixtures run)."""
    stream = _Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def _finished_bar(text: str, description: str, done: str, unit: str) -> bool:
    """The bar's last state: ``description: 100%|...| done [elapsed<remaining, rate]``."""
    rate = rf"[\d.]+(?:{unit}/s|s/{unit})"
    return re.search(rf"{re.escape(description)}: 100%\|[^|]*\| {done} \[[\d:]+<[\d:]+, +{rate}\]", text) is not None


def test_training_and_scoring_show_bars_on_a_terminal_and_lines_elsewhere(tmp_path, source, capsys, monkeypatch):
    recipe = apply_overrides(get_recipe("deeplab_v1", "quick"), TINY)
    lines: list[str] = []
    model = train(recipe, source, tmp_path, 0, Distributed(), progress=lines.append)
    evaluate(model, source.split("val"), Distributed())
    assert [line.split(" loss ")[0] for line in lines] == [f"deeplab_v1 it {i}/4" for i in range(1, 5)]
    assert capsys.readouterr().err == ""  # off a terminal: no bar, nothing but the lines

    terminal = _terminal(monkeypatch)
    lines.clear()
    model = train(recipe, source, tmp_path, 0, Distributed(), progress=lines.append)  # resumes at 2 (checkpoint)
    assert lines[0].startswith("deeplab_v1: resuming from iteration 2")
    assert [line.split(" loss ")[0] for line in lines[1:]] == ["deeplab_v1 it 3/4", "deeplab_v1 it 4/4"]
    drawn = terminal.getvalue()
    assert "deeplab_v1:  50%|" in drawn and "| 2/4 [" in drawn  # the bar starts at the resume iteration
    assert _finished_bar(drawn, "deeplab_v1", "4/4", "it"), drawn

    evaluate(model, source.split("val"), Distributed())
    assert _finished_bar(terminal.getvalue(), "scoring val", "4/4", "img"), terminal.getvalue()


def test_feature_caching_shows_a_bar_on_a_terminal(tmp_path, source, monkeypatch):
    monkeypatch.setenv("SEGREPRO_CACHE", str(tmp_path / "cache"))  # empty: another test's cached features skip the bar
    terminal = _terminal(monkeypatch)
    frontend = tmp_path / "frontend.pt"
    save_torch(build_model(get_recipe("frontend", "quick")).state_dict(), frontend)
    recipe = apply_overrides(get_recipe("context_basic", "quick"), TINY)
    train(recipe, source, tmp_path / "context", 0, Distributed(), frontend, progress=lambda _: None)
    assert _finished_bar(terminal.getvalue(), "context_basic: caching features", "8/8", "img"), terminal.getvalue()


def test_crf_search_shows_a_bar_of_grid_points_on_a_terminal(monkeypatch):
    terminal = _terminal(monkeypatch)
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.integers(0, 256, (3, 16, 20), dtype=np.uint8)) for _ in range(3)]
    labels = [rng.integers(0, 21, (16, 20)).astype(np.int64) for _ in range(3)]
    probabilities = [torch.softmax(torch.from_numpy(rng.normal(size=(21, 16, 20)).astype(np.float32)), 0)
                     for _ in range(3)]
    lines: list[str] = []
    search(images, probabilities, labels, {"w1": (3.0, 6.0), "theta_alpha": (10.0,), "theta_beta": (5.0,)},
           chunk=2, progress=lines.append)
    assert [line.split(":")[0] for line in lines] == ["crf-search coarse"] * 2 + ["crf-search fine"] * 2
    assert _finished_bar(terminal.getvalue(), "crf-search coarse", "2.0/2 points", "point"), terminal.getvalue()
    assert _finished_bar(terminal.getvalue(), "crf-search fine", "2.0/2 points", "point"), terminal.getvalue()


def test_only_the_main_process_on_a_terminal_draws(monkeypatch):
    def drawn(main: bool) -> bool:
        with bar("x", 1, "it", main=main) as live:
            return not live.disable

    assert not drawn(True) and beside_bars(print) is print  # not a terminal: lines as they are
    _terminal(monkeypatch)
    assert drawn(True) and not drawn(False) and beside_bars(print) is not print
