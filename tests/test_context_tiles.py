"""The context module trains as fyu/dilation trained it (issue 21, item 1): on each image's one
900x900 tile map of front-end scores, cached on disk as float16, against labels sliced at stride 8
from offset 0, in the training net's per-layer padding, loss on the 66x66 map. Checked on genuine
VOC images of different sizes against independent numpy constructions."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import methods
from benchmarks.data.datasets import resolve_dataset
from benchmarks.data.voc import read_image, read_label
from benchmarks.distributed import Distributed
from benchmarks.feature_cache import TileFeatures, cache_bytes, image_feature_cache, tile_labels
from benchmarks.files import save_torch
from benchmarks.networks import build_model
from benchmarks.recipes import RecipeError, get_recipe
from benchmarks.train import train

MARGIN, TILE, UNITS, STRIDE = 186, 900, 66, 8  # fyu/dilation test.py: margin 186, 900 x 900 input, 66 x 66 out


def _genuine(shared_dir, count):
    voc = shared_dir / "data" / "voc-real-mini" / "VOCdevkit" / "VOC2012"
    ids = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[:count]
    return [(read_image(voc / "JPEGImages" / f"{i}.jpg"), read_label(voc / "SegmentationClass" / f"{i}.png"))
            for i in ids]


def test_tile_features_are_the_front_end_scores_of_the_reflect_101_padded_900_tile(shared_dir):
    model = methods.create("context_basic", 21, width=1 / 16).eval()
    for image, _ in _genuine(shared_dir, 2):
        height, width = image.shape[:2]
        padded = np.pad(image, ((MARGIN, MARGIN), (MARGIN, MARGIN), (0, 0)), mode="reflect")  # OpenCV REFLECT_101
        tile = np.pad(padded, ((0, TILE - padded.shape[0]), (0, TILE - padded.shape[1]), (0, 0)), mode="reflect")
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        expected = model.frontend_scores(torch.from_numpy(tile).permute(2, 0, 1)[None].float(), padded=True)
        with torch.no_grad():
            got = model.tile_features(x)
        assert got.shape == (1, 21, UNITS, UNITS) and (height, width) != (TILE, TILE)
        torch.testing.assert_close(got, expected.detach(), rtol=0, atol=0)


def test_tile_labels_are_sliced_at_stride_8_from_offset_0_with_255_beyond_the_image(shared_dir):
    sizes = set()
    for _, label in _genuine(shared_dir, 4):
        sizes.add(label.shape)
        got = tile_labels(torch.from_numpy(label.astype(np.int64))).numpy()
        expected = np.full((UNITS, UNITS), 255, np.uint8)
        rows, cols = -(-label.shape[0] // STRIDE), -(-label.shape[1] // STRIDE)
        for r in range(rows):
            for c in range(cols):
                expected[r, c] = label[STRIDE * r, STRIDE * c]
        assert np.array_equal(got, expected)
        assert (got[rows:] == 255).all() and (got[:, cols:] == 255).all()
    assert len(sizes) > 1  # images of different sizes


def test_training_form_pads_each_layer_by_its_dilation_and_agrees_with_the_deploy_form_inside():
    torch.manual_seed(0)
    module = methods.create("context_large", 21, width=1 / 16).context
    for name in module.layer_names:  # weights far from the identity, so that the two forms can differ
        layer = getattr(module, name)
        if isinstance(layer, torch.nn.Conv2d):
            torch.nn.init.normal_(layer.weight, std=0.1)
            torch.nn.init.normal_(layer.bias, std=0.1)
    x = torch.randn(1, 21, 140, 140)
    with torch.no_grad():
        training, deploy = module.training_form(x), module(x)
        manual = x
        for name in module.layer_names:
            layer = getattr(module, name)
            if isinstance(layer, torch.nn.Conv2d):  # network.py build_context: pad = dilation (1x1: none)
                d, k = layer.dilation[0], layer.kernel_size[0]
                manual = F.conv2d(manual, layer.weight, layer.bias, padding=d if k == 3 else 0, dilation=d)
            else:
                manual = torch.relu(manual)
    assert training.shape == deploy.shape == x.shape
    torch.testing.assert_close(training, manual)
    inside = slice(33, 140 - 33)  # units whose 67x67 window lies inside the map
    torch.testing.assert_close(training[..., inside, inside], deploy[..., inside, inside])
    assert not torch.allclose(training[..., :5, :5], deploy[..., :5, :5])


def test_batches_mirror_features_and_labels_together(tmp_path):
    count, channels = 6, 3
    features = np.random.default_rng(0).standard_normal((count, channels, UNITS, UNITS)).astype(np.float16)
    labels = np.random.default_rng(1).integers(0, 21, (count, UNITS, UNITS)).astype(np.uint8)
    cache = TileFeatures(tmp_path, features, labels)
    items = [(i, 100 + i) for i in range(count)]
    got_features, got_labels = cache.batch(items, seed=5)
    flipped = 0
    for row, (index, position) in enumerate(items):
        mirror = np.random.default_rng([5, position]).random() < 0.5
        flipped += mirror
        expect_f = features[index][..., ::-1] if mirror else features[index]
        expect_l = labels[index][..., ::-1] if mirror else labels[index]
        assert np.array_equal(got_features[row].numpy(), expect_f.astype(np.float32))
        assert np.array_equal(got_labels[row].numpy(), expect_l.astype(np.int64))
    assert 0 < flipped < count


def test_paper_context_module_trains_on_varied_size_genuine_images_from_a_disk_cache(tmp_path, small_voc, monkeypatch):
    monkeypatch.setenv("SEGREPRO_CACHE", str(tmp_path / "cache"))
    source = resolve_dataset(small_voc(tmp_path / "voc", train=5, val=1))
    assert len({tuple(source.split("trainaug")[i].image.shape) for i in range(5)}) > 1
    recipe = dataclasses.replace(get_recipe("context_basic", "paper"), pretrained=False, width=1 / 16, batch_size=4,
                                 iterations=2, log_every=1)
    assert recipe.tile_features and recipe.crop is None and recipe.flip
    frontend = tmp_path / "frontend.pt"
    torch.manual_seed(0)
    save_torch(build_model(dataclasses.replace(get_recipe("frontend", "paper"), pretrained=False,
                                               width=1 / 16)).state_dict(), frontend)
    dist_info = Distributed(device=torch.device("cpu"))
    model = train(recipe, source, tmp_path / "run", 0, dist_info, frontend, progress=lambda _: None)
    [folder] = (tmp_path / "cache" / "context-features").iterdir()
    cache = TileFeatures.open(folder)
    assert cache.features.dtype == np.float16 and cache.features.shape == (5, 21, UNITS, UNITS)
    assert (folder / "features.f16").stat().st_size + (folder / "labels.u8").stat().st_size == cache_bytes(5, 21)
    with torch.no_grad():
        image, label = source.split("trainaug")[2].image, source.split("trainaug")[2].label
        x = model.input_convention.normalize(torch.from_numpy(image).permute(2, 0, 1)[None])
        torch.testing.assert_close(torch.from_numpy(cache.features[2].astype(np.float32)),
                                   model.tile_features(x)[0].half().float())
    assert np.array_equal(cache.labels[2], tile_labels(torch.from_numpy(label.astype(np.int64))).numpy())
    written = (folder / "features.f16").stat().st_mtime_ns
    train(recipe, source, tmp_path / "run2", 0, dist_info, frontend, progress=lambda _: None)
    assert (folder / "features.f16").stat().st_mtime_ns == written  # computed once, reused


def test_tile_features_need_cached_features():
    with pytest.raises(RecipeError, match="tile_features"):
        dataclasses.replace(get_recipe("frontend", "paper"), tile_features=True)
    assert not get_recipe("context_basic", "quick").tile_features


def test_whole_image_maps_go_to_disk_as_computed_and_varied_sizes_are_padded(tmp_path, small_voc):
    """The quick profile's whole-image protocol (and compare's staged heads): the stem's float32
    maps on disk, read back bit for bit; a batch of two sizes is padded as mmseg pads one."""
    source = resolve_dataset(small_voc(tmp_path / "voc", train=3, val=1))
    split = source.split("trainaug")
    model = methods.create("context_basic", 21, width=1 / 16).eval()
    stem, _ = model.staged_split()
    dataset = [(torch.from_numpy(split[i].image).permute(2, 0, 1), torch.from_numpy(split[i].label).long(), "")
               for i in range(3)]
    cache = image_feature_cache(lambda x: stem(model.input_convention.normalize(x)), dataset, {"test": 1},
                                tmp_path / "cache", device=torch.device("cpu"), description="test")
    for index, (image, label, _) in enumerate(dataset):
        features, labels = cache.item(index)
        with torch.no_grad():
            expected = stem(model.input_convention.normalize(image[None]))[0]
        assert torch.equal(features, expected) and torch.equal(labels, label)
    assert cache.batch([(1, 0)], seed=0)[0].shape == (1, *cache.item(1)[0].shape)
    sizes = [tuple(cache.item(i)[0].shape) for i in range(3)]
    pair = next((a, b) for a in range(3) for b in range(3) if sizes[a] != sizes[b])
    features, labels = cache.batch([(pair[0], 0), (pair[1], 1)], seed=0)
    for row, index in enumerate(pair):  # padded at the bottom and right, as mmseg's stack_batch: 0 and 255
        item_features, item_labels = cache.item(index)
        height, width = item_features.shape[-2:]
        assert torch.equal(features[row, :, :height, :width], item_features)
        assert features[row].sum() == item_features.sum()
        label_height, label_width = item_labels.shape
        assert torch.equal(labels[row, :label_height, :label_width], item_labels)
        assert (labels[row] == 255).sum() == (item_labels == 255).sum() + labels[row].numel() - item_labels.numel()
    assert features.shape[-2:] == (max(sizes[pair[0]][1], sizes[pair[1]][1]), max(sizes[pair[0]][2], sizes[pair[1]][2]))

