"""Hostile data and recipes (issue 12): ids that would leave their folders, odd encodings, huge
images, non-.mat annotations, file modes, killed generations, out-of-range recipe and CRF values,
and the embedded dataset passed as --data. Each is a clear one-line error or the right behaviour."""

import dataclasses
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from benchmarks.cli import build_parser
from benchmarks.crf.dense_crf import CRFParams
from benchmarks.data.datasets import DatasetSource, resolve_dataset
from benchmarks.data.embedded import MARKER, embedded_root
from benchmarks.data.embedded_scenes import EmbeddedConfig
from benchmarks.data.prepare_data import prepare_data, read_sbd_mat
from benchmarks.data.voc import MAX_IMAGE_PIXELS, DataError, VOCSplit, id_path, read_image, read_label, read_split
from benchmarks.distributed import Distributed
from benchmarks.recipes import PROFILES, RecipeError, apply_overrides, get_recipe
from benchmarks.resolve import RunPlan, expand_targets
from benchmarks.train import train

ROOT = Path(__file__).resolve().parents[1]
TINY = EmbeddedConfig(seed=5, train_images=3, val_images=2, crf_holdout_images=1, height=64, width=80)


@pytest.fixture
def trees(tmp_path):
    """VOC (train a,b; val c,d) and SBD (train e; val f) trees inside ``tmp_path/data``, with an
    image and an annotation planted in ``tmp_path`` itself, outside both."""
    base = tmp_path / "data"
    voc = base / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    for image_id in "abcdef":
        Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(voc / "JPEGImages" / f"{image_id}.jpg")
    for image_id in "abcd":
        Image.fromarray(np.ones((6, 8), np.uint8), mode="L").save(voc / "SegmentationClass" / f"{image_id}.png")
    (voc / "ImageSets/Segmentation/train.txt").write_text("a\nb\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text("c\nd\n")
    sbd = base / "benchmark_RELEASE" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    for image_id in "ef":
        savemat(sbd / "cls" / f"{image_id}.mat", {"GTcls": {"Segmentation": np.full((6, 8), 2, np.uint8)}})
    (sbd / "train.txt").write_text("e\n")
    (sbd / "val.txt").write_text("f\n")
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "outside.jpg")
    savemat(tmp_path / "outside.mat", {"GTcls": {"Segmentation": np.full((6, 8), 2, np.uint8)}})
    return base, voc, sbd


@pytest.fixture
def umask():
    """Sets the process umask for one test and restores it."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


# 1. ids from lists are plain file stems; paths built from ids stay inside their folder

def test_every_genuine_voc_and_sbd_id_is_accepted(shared_dir):
    splits = shared_dir / "data" / "voc2012-splits"
    ids = {i for name in ("train.txt", "val.txt", "trainval.txt", "train_aug.txt") for i in read_split(splits / name)}
    assert len(ids) == 12031 and {"2007_000032", "2008_000002"} <= ids


@pytest.mark.parametrize("bad", ["../../outside/x", "/abs/x", "sub/x", "..\\x", ".hidden", "-x", "a\x00b"])
def test_split_list_id_that_is_not_a_plain_stem_is_refused(trees, bad):
    base, voc, _ = trees
    split = voc / "ImageSets/Segmentation/train.txt"
    split.write_text(f"a\n{bad}\nb\n")
    with pytest.raises(DataError, match=rf"^split list {re.escape(str(split))} line 2: image id .* is not a plain "
                                        "file name .*; correct or remove that line$"):
        VOCSplit(base, "train")


def test_sbd_ids_cannot_make_prepare_data_write_outside_the_tree(trees, tmp_path):
    base, voc, sbd = trees
    escape = os.path.relpath(tmp_path / "outside", voc / "JPEGImages")  # ../../../../outside from every folder
    (sbd / "train.txt").write_text(f"e\n{escape}\n")
    with pytest.raises(DataError, match=rf"split list {re.escape(str(sbd / 'train.txt'))} line 2: image id "
                                        rf"'{re.escape(escape)}' is not a plain file name"):
        prepare_data(base, base)
    (sbd / "train.txt").write_text(f"{tmp_path / 'outside'}\n")
    with pytest.raises(DataError, match=rf"{re.escape(str(sbd / 'train.txt'))} line 1: .* not a plain file name"):
        prepare_data(base, base)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "outside.jpg", "outside.mat"]
    assert not (voc / "SegmentationClassAug").exists()


def test_a_path_built_from_an_id_stays_inside_its_folder(trees, tmp_path):
    base, voc, _ = trees
    split = VOCSplit(base, "train")
    assert split.image_path("a") == voc / "JPEGImages" / "a.jpg"
    with pytest.raises(DataError, match=r"image id '\.\./\.\./x': '\.\./\.\./x\.jpg' names .*, outside .*JPEGImages; "
                                        "names must be plain"):
        split.image_path("../../x")
    with pytest.raises(DataError, match="outside"):
        id_path(voc / "SegmentationClass", str(tmp_path / "outside"), ".png")


# 2. split-list encodings

def test_split_list_with_a_utf8_bom_reads(trees):
    base, voc, _ = trees
    (voc / "ImageSets/Segmentation/train.txt").write_bytes(b"\xef\xbb\xbfa\r\nb\r\n")
    assert VOCSplit(base, "train").ids == ["a", "b"]


def test_split_list_that_is_not_utf8_names_the_file_and_the_encoding(trees):
    base, voc, _ = trees
    split = voc / "ImageSets/Segmentation/train.txt"
    split.write_bytes("a\nb\u00e9\n".encode("latin-1"))
    with pytest.raises(DataError, match=rf"split list {re.escape(str(split))} is not UTF-8 text \(byte 0xe9 at "
                                        r"offset 3\); save it as UTF-8"):
        VOCSplit(base, "train")


# 3. images past the size limit are refused from the header, before decoding

def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` RGB and holds no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize(("width", "height"), [(10_001, 10_000), (20_000, 20_000)])  # under / over PIL's own error
def test_huge_image_or_label_is_a_one_line_error(tmp_path, width, height):
    assert MAX_IMAGE_PIXELS == 10_000 * 10_000
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header(width, height))
    for reader, kind in ((read_image, "image"), (read_label, "label")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(DataError, match=rf"^{kind} {re.escape(str(path))} is .*more than the 100,000,000 "
                                                r"pixels \(10,000 x 10,000\) read here; downscale it") as error:
                reader(path)
        assert "\n" not in str(error.value) and not caught


def test_image_at_the_limit_is_read_past_the_header(tmp_path):
    path = tmp_path / "limit.png"
    path.write_bytes(_png_header(10_000, 10_000))  # allowed: decoding starts, and finds no pixel data
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_image(path)


# 4. an SBD annotation that is not a .mat file

def test_text_or_hdf5_file_given_as_sbd_mat_is_a_one_line_error(trees):
    base, _, sbd = trees
    path = sbd / "cls" / "e.mat"
    path.write_text("image_id,class\n" + "2008_000002,15\n" * 20)
    with pytest.raises(DataError, match=rf"^SBD annotation {re.escape(str(path))} is not a readable \.mat file "
                                        ".*re-extract") as error:
        prepare_data(base, base)
    assert "\n" not in str(error.value)
    path.write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(124) + b"\x00\x02IM")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))} is not a readable \.mat file \(Please use HDF"):
        read_sbd_mat(path)


# 5. files written for users honour the umask

@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_prepare_data_files_honour_the_umask(trees, umask, mask, mode):
    base, voc, _ = trees
    umask(mask)
    prepare_data(base, base)
    written = [*(voc / "SegmentationClassAug").iterdir(),  # a, b, e, f and .sources.json
               *(voc / "ImageSets/Segmentation" / name for name in ("trainaug.txt", "sbdtrain.txt", "sbdval.txt"))]
    assert len(written) == 8 and {oct(p.stat().st_mode & 0o777) for p in written} == {oct(mode)}
    assert not list(voc.rglob("*.tmp"))  # no temporary file left


def test_embedded_cache_honours_the_umask(tmp_path, umask):
    root = embedded_root(TINY, cache_dir=tmp_path)
    assert oct(root.stat().st_mode & 0o777) == oct(0o755)
    assert oct((root / "VOCdevkit" / "VOC2012" / "JPEGImages" / "embedded_000000.jpg").stat().st_mode & 0o777) == \
        oct(0o644)


# 6. a killed generation's staging folder is removed by the next start

def test_staging_folder_of_a_killed_generation_is_removed(tmp_path):
    big = "EmbeddedConfig(train_images=100_000, height=64, width=80)"  # far longer than the test waits
    child = subprocess.Popen([sys.executable, "-c", "import sys; from pathlib import Path; "
                              "from benchmarks.data.embedded import embedded_root; "
                              "from benchmarks.data.embedded_scenes import EmbeddedConfig; "
                              f"embedded_root({big}, Path(sys.argv[1]))",
                              str(tmp_path)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.time() + 60
        while not list(tmp_path.glob(".embedded-*/VOCdevkit")) and time.time() < deadline and child.poll() is None:
            time.sleep(0.02)
        child.send_signal(signal.SIGSTOP)  # alive, mid-generation
        (staging,) = tmp_path.glob(".embedded-*")
        root = embedded_root(TINY, cache_dir=tmp_path)
        assert staging.is_dir(), "the staging folder of a live generation was removed"
    finally:
        child.kill()
        child.wait()
    other_host = staging.with_name(staging.name.rpartition("@")[0] + "@elsewhere.invalid")
    other_host.mkdir()  # a killed pid's folder, but of another host sharing the cache
    assert embedded_root(TINY, cache_dir=tmp_path) == root
    assert not staging.exists() and other_host.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([root.name, other_host.name])


# 7. recipe values are checked at construction

COUNT = "a whole number >= 1"


LR = "a number in (0, 1e12] (beyond, float32 updates overflow)"


@pytest.mark.parametrize(("override", "allowed"), [
    ("iterations=0", COUNT), ("iterations=-5", COUNT), ("batch_size=0", COUNT), ("crop=0", f"none or {COUNT}"),
    ("checkpoint_every=0", COUNT), ("log_every=0", COUNT),
    ("crfrnn_iterations=0", COUNT), ("crfrnn_images=0", f"none or {COUNT}"),
    ("crfrnn_lr=0", "a finite number > 0"), ("crfrnn_lr=nan", "a finite number > 0"),
    ("loss=bogus", "mean or sum"), ("optimizer=rmsprop", "sgd or adam"), ("schedule=cosine", "fixed, step or poly"),
    ("lr=nan", LR), ("lr=0", LR), ("lr=inf", LR), ("lr=1e30", LR),
    ("crf_grid=w1:5", "values > 0 for each of w1, theta_alpha and theta_beta (crf-search --w1 1,2 ... sets them; "
                      "--set cannot)"),
    ("momentum=1", "a number in [0, 1)"), ("weight_decay=-1e-4", "a finite number >= 0"),
    ("dropout=1", "none or a number in [0, 1)"),
    *((f"width={bad}", "a number in (0, 1000] (wider, a layer's size overflows; far less is refused for its memory)")
      for bad in ("0", "1e6")),
    ("scale=1.5,0.5", "none or low,high with 0 < low <= high"), ("scale=0,1", "none or low,high with 0 < low <= high"),
    ("init_from=deeplab_v1", "another method than deeplab_v1 (or none)"),
    ("cached_features=true", "false unless train_only names the part trained on them (the staged context_basic and "
                             "context_large recipes)"),
])
def test_out_of_range_recipe_value_is_a_one_line_error(override, allowed):
    key = override.partition("=")[0]
    with pytest.raises(RecipeError, match=rf"^recipe deeplab_v1 \(quick\): {key}=[^\n]* is not allowed; it must be "
                                          rf"{re.escape(allowed)}$"):
        apply_overrides(get_recipe("deeplab_v1", "quick"), [override])


def test_step_schedule_needs_a_step_size_and_crf_values_are_checked():
    fcn = get_recipe("fcn32s", "paper")
    with pytest.raises(RecipeError, match=r"fcn32s \(paper\): step_size=0 is not allowed; .* with schedule=step"):
        apply_overrides(fcn, ["schedule=step"])
    assert apply_overrides(fcn, ["schedule=step", "step_size=10"]).step_size == 10
    with pytest.raises(RecipeError, match=r"crf: CRF parameter w1=nan is out of range"):
        apply_overrides(fcn, ["crf=w1:nan"])


def test_dependency_cycle_is_a_recipe_error():
    cycle = dataclasses.replace(PROFILES["paper"]["fcn32s"], init_from="fcn8s")
    with pytest.raises(RecipeError, match=r"cycle: fcn8s -> fcn16s -> fcn32s -> fcn8s \(init_from\); set init_from"):
        expand_targets(["fcn8s+crf"], RunPlan(profile="paper", seeds=(0,), extra_recipes=(cycle,)))
    with pytest.raises(RecipeError, match="init_from='fcn16s' is not allowed"):
        expand_targets(["fcn8s"], RunPlan(profile="paper", seeds=(0,), overrides=("init_from=fcn16s",)))


def test_cached_features_on_a_method_not_trained_in_stages_stops_before_training(tmp_path):
    recipe = apply_overrides(get_recipe("deeplab_v1", "quick"), ["cached_features=true", "train_only=fc8"])
    source = DatasetSource("embedded", embedded_root(TINY, cache_dir=tmp_path / "cache"), comparable_to_paper=False)
    with pytest.raises(RecipeError, match=r"cached_features=True .* needs init_from and a method trained in stages"):
        train(recipe, source, tmp_path / "run", 0, Distributed())
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# 8. CRF parameters: finite and in range, in CRFParams, crf-search's options and a record

@pytest.mark.parametrize(("change", "allowed"), [
    ({"w1": math.nan}, "a finite number >= 0"), ({"w2": -1.0}, "a finite number >= 0"),
    ({"theta_alpha": 0.0}, "a finite number > 0"), ({"theta_beta": math.inf}, "a finite number > 0"),
    ({"theta_gamma": -3.0}, "a finite number > 0"), ({"iterations": 0}, "a whole number >= 1"),
    ({"iterations": 2.5}, "a whole number >= 1"),
])
def test_crf_params_out_of_range_are_refused(change, allowed):
    (name, value), = change.items()
    with pytest.raises(ValueError, match=rf"^CRF parameter {name}={value!r} is out of range: it must be {allowed}$"):
        CRFParams(**change)
    with pytest.raises(ValueError, match=f"CRF parameter {name}="):
        CRFParams.from_pairs(tuple(change.items()))


def test_crf_pairs_of_a_recipe_give_whole_iterations():
    assert CRFParams.from_pairs((("iterations", 5.0), ("w1", 0.0))) == CRFParams(w1=0.0, iterations=5)


@pytest.mark.parametrize(("option", "text", "message"), [
    ("--w1", "5,nan", "argument --w1: CRF parameter w1=nan is out of range"),
    ("--theta-alpha", "0", "argument --theta-alpha: CRF parameter theta_alpha=0.0 is out of range"),
    ("--theta-beta", "3,-inf", "argument --theta-beta: CRF parameter theta_beta=-inf is out of range"),
])
def test_crf_search_options_refuse_non_finite_values(capsys, option, text, message):
    with pytest.raises(SystemExit) as exit_status:
        build_parser().parse_args(["crf-search", "deeplab_v1", option, text])  # parsing only: never searches
    assert exit_status.value.code == 2 and message in capsys.readouterr().err


# 9. the embedded dataset given as --data is the embedded dataset

def test_embedded_folder_given_as_data_is_labelled_embedded(tmp_path, shared_dir):
    root = embedded_root(TINY, cache_dir=tmp_path / "cache")
    voc = root / "VOCdevkit" / "VOC2012"
    for given in (root, root / "VOCdevkit", voc):
        source = resolve_dataset(given)
        assert (source.name, source.comparable_to_paper, source.root) == ("embedded", False, voc)
    copy = tmp_path / "copy"
    shutil.copytree(root / "VOCdevkit", copy / "VOCdevkit")  # without embedded.json: the marker tells
    assert resolve_dataset(copy).name == "embedded"
    (voc / MARKER).unlink()  # a generation from before the marker: embedded.json beside VOCdevkit tells
    assert resolve_dataset(root).name == "embedded"
    real = resolve_dataset(shared_dir / "data" / "voc-real-mini")
    assert (real.name, real.comparable_to_paper) == ("voc2012", True)
