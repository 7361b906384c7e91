"""The embedded dataset: deterministic bytes, VOC layout read by the real loader, and the design
properties the benchmark relies on (context pairs, band distance, boundary bands)."""

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.data.embedded import embedded_root, generate
from benchmarks.data.embedded_coco import render_coco_sample
from benchmarks.data.embedded_scenes import APPEARANCE, CONTEXT_PAIRS, SCENE_CUES, EmbeddedConfig, render_sample
from benchmarks.data.voc import NUM_CLASSES, DataError, VOCSplit, read_image, read_label

SMALL = EmbeddedConfig(seed=3, train_images=12, val_images=6, crf_holdout_images=4, coco_images=10, height=64,
                       width=80)


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_generations_are_byte_identical(tmp_path):
    generate(SMALL, tmp_path / "a")
    generate(SMALL, tmp_path / "b")
    first, second = _tree_digest(tmp_path / "a"), _tree_digest(tmp_path / "b")
    assert first == second
    assert len([p for p in first if p.startswith("VOCdevkit/VOC2012/JPEGImages/")]) == 22
    assert len([p for p in first if p.startswith("coco/train2017/")]) == 10
    generate(EmbeddedConfig(**{**SMALL.__dict__, "seed": 4}), tmp_path / "c")
    assert _tree_digest(tmp_path / "c") != first


def test_loader_round_trips_the_generated_tree(tmp_path):
    root = embedded_root(SMALL, cache_dir=tmp_path)
    train, val, holdout = VOCSplit(root, "train"), VOCSplit(root, "val"), VOCSplit(root, "crfholdout")
    assert (len(train), len(val), len(VOCSplit(root, "trainaug")), len(holdout)) == (12, 6, 12, 4)
    assert not set(train.ids) & set(val.ids) and not set(holdout.ids) & (set(train.ids) | set(val.ids))
    for split, offset in ((train, 0), (val, 12), (holdout, 18)):
        for index in range(len(split)):
            sample = split[index]
            image, label, _ = render_sample(SMALL, offset + index)
            assert np.array_equal(sample.label, label)  # PNG is lossless
            error = np.abs(sample.image.astype(int) - image.astype(int)).mean()
            assert error < 10, f"JPEG error {error}"  # the 6-grey-level sensor noise is what JPEG loses
            assert read_label(split.label_path(sample.image_id)).shape == (64, 80)
    coco = VOCSplit(root, "coco")  # the COCO-format extra set, converted by prepare-data --coco
    instances = [render_coco_sample(SMALL, k)[1] for k in range(10)]
    kept = [k for k in range(10) if any(cls < NUM_CLASSES and not crowd for cls, _, crowd in instances[k])]
    assert coco.ids == [f"{k + 1:012d}" for k in kept] and 0 < len(kept) < 10
    for index, k in enumerate(kept):
        drawn = {cls for cls, _, _ in instances[k] if cls < NUM_CLASSES}
        assert set(np.unique(coco[index].label).tolist()) <= drawn | {0, 255}  # the non-VOC object is background
    with Image.open(train.label_path(train.ids[0])) as png:
        assert png.mode == "P"
    assert read_image(train.image_path(train.ids[0])).shape == (64, 80, 3)


def test_cache_is_reused_and_keyed_by_the_knobs(tmp_path):
    root = embedded_root(SMALL, cache_dir=tmp_path)
    stamp = (root / "embedded.json").stat().st_mtime_ns
    assert embedded_root(SMALL, cache_dir=tmp_path) == root
    assert (root / "embedded.json").stat().st_mtime_ns == stamp
    other = embedded_root(EmbeddedConfig(**{**SMALL.__dict__, "boundary_width": 5}), cache_dir=tmp_path)
    assert other != root
    assert not list(tmp_path.glob(".embedded-*"))  # no staging folder left behind


def test_context_pairs_look_alike_and_the_scene_decides():
    for first, second in CONTEXT_PAIRS:
        colour_a, texture_a, period_a = APPEARANCE[first]
        colour_b, texture_b, period_b = APPEARANCE[second]
        assert np.array_equal(colour_a, colour_b) and (texture_a, period_a) == (texture_b, period_b)
    distinct = {(tuple(np.round(c)), t, p) for k, (c, t, p) in APPEARANCE.items()}
    assert len(distinct) == 20 - len(CONTEXT_PAIRS)
    config = EmbeddedConfig()
    seen = set()
    margin = config.cue_height + config.context_distance - config.boundary_width // 2
    for index in range(200):
        _, label, scene = render_sample(config, index)
        strip = set(np.unique(label[: config.cue_height]).tolist())
        assert strip - {0, 255} == {SCENE_CUES[scene]}, "one cue object of the scene's class in the strip"
        assert set(np.unique(label[config.cue_height:]).tolist()) & set(SCENE_CUES) == set()
        gap = label[config.cue_height + config.boundary_width // 2 + 1 : margin]
        assert (gap == 0).all(), "objects must lie context_distance below the cue strip"
        present = set(np.unique(label).tolist())
        for pair in CONTEXT_PAIRS:
            assert pair[1 - scene] not in present, "a context class appeared in the other scene"
            if pair[scene] in present:
                seen.add((pair[scene], scene))
    assert len(seen) == 2 * len(CONTEXT_PAIRS)


def test_a_tampered_cache_is_refused_naming_the_file(tmp_path):
    """Labels changed after generation trained and scored under the untampered fingerprint
    (issue 26): the cache is checked against its manifest's sha256 before use."""
    root = embedded_root(SMALL, cache_dir=tmp_path / "first")
    label = root / "VOCdevkit" / "VOC2012" / "SegmentationClassAug" / "embedded_000003.png"
    tampered = np.zeros_like(read_label(label))
    Image.fromarray(tampered, mode="P").save(label)
    copy = tmp_path / "second" / root.name  # a fresh path: the check runs once per process and folder
    shutil.copytree(root, copy)
    with pytest.raises(DataError, match=rf"^embedded dataset file {re.escape(str(copy))}/VOCdevkit/VOC2012/"
                                        r"SegmentationClassAug/embedded_000003\.png changed after generation .*remove"):
        embedded_root(SMALL, cache_dir=tmp_path / "second")
    shutil.rmtree(copy)
    assert embedded_root(SMALL, cache_dir=tmp_path / "second") == copy  # regenerated, and it verifies



@pytest.mark.parametrize("edit", ["entry_removed", "table_emptied"])
def test_a_tampered_cache_whose_table_was_edited_too_is_refused(tmp_path, edit):
    """The re-probe of issue 26 changed a label and also dropped its entry from (or emptied)
    embedded.json's sha256 table: the run trained on it, exit 0. Every file of the tree must be
    one the table vouches for."""
    root = embedded_root(SMALL, cache_dir=tmp_path / "first")
    name = "VOCdevkit/VOC2012/SegmentationClassAug/embedded_000003.png"
    Image.fromarray(np.zeros_like(read_label(root / name)), mode="P").save(root / name)
    manifest = json.loads((root / "embedded.json").read_text())
    manifest["sha256"] = {} if edit == "table_emptied" else {k: v for k, v in manifest["sha256"].items() if k != name}
    (root / "embedded.json").write_text(json.dumps(manifest))
    copy = tmp_path / "second" / root.name  # a fresh path: the check runs once per process and folder
    shutil.copytree(root, copy)  # JPEGImagesCOCO's symlinks become copies: those still verify
    named = re.escape(f"{copy}/{name}") if edit == "entry_removed" else re.escape(str(copy)) + "/.*"
    with pytest.raises(DataError, match=rf"^embedded dataset file {named} is not in .*embedded\.json's sha256 "
                                        r"table \(added, or the table edited\); remove"):
        embedded_root(SMALL, cache_dir=tmp_path / "second")
