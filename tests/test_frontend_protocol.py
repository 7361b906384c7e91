"""The front end trains as fyu/dilation does (network.py: make_image_label_data, train.py): the
500x500 crop of the reflection-padded image is the network input, the score map is 16x16, and
the labels are the 16x16 pixels at offset 186, stride 8 of the crop. Checked on a genuine VOC
sample against an independent numpy construction (np.pad 'reflect' is OpenCV's REFLECT_101)."""

import dataclasses

import numpy as np
import pytest
import torch

from benchmarks.bench.methods import paper_profile_flops
from benchmarks.data.transforms import to_tv_tensors
from benchmarks.data.voc import read_image, read_label
from benchmarks.distributed import Distributed
from benchmarks.networks import build_model
from benchmarks.optimizer import build_optimizer
from benchmarks.recipes import RecipeError, get_recipe
from benchmarks.train import training_step
from benchmarks.training_mode import TrainedPart, training_mode

MARGIN, CROP, STRIDE = 186, 500, 8  # fyu/dilation: margin=186, --crop_size 500, label_stride=8


def _genuine_sample(shared_dir):
    voc = shared_dir / "data" / "voc-real-mini" / "VOCdevkit" / "VOC2012"
    image_id = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]
    return read_image(voc / "JPEGImages" / f"{image_id}.jpg"), read_label(voc / "SegmentationClass" / f"{image_id}.png")


def _find_crop(padded: np.ndarray, crop: np.ndarray) -> tuple[int, int]:
    """The offset of ``crop`` inside ``padded`` (both H x W x 3), by exhaustive search."""
    rows, cols = padded.shape[0] - crop.shape[0] + 1, padded.shape[1] - crop.shape[1] + 1
    matches = [(r, c) for r in range(rows) for c in range(cols)
               if np.array_equal(padded[r, c : c + 8], crop[0, :8]) and np.array_equal(padded[r:r + crop.shape[0],
                                                                                      c:c + crop.shape[1]], crop)]
    assert len(matches) == 1, matches
    return matches[0]


def test_paper_frontend_step_is_a_padded_500_crop_with_16x16_labels_at_offset_186(shared_dir):
    image, label = _genuine_sample(shared_dir)
    recipe = dataclasses.replace(get_recipe("frontend", "paper"), pretrained=False, width=1 / 16, flip=False,
                                 batch_size=1)
    assert recipe.padded_crops and recipe.crop == CROP
    model = build_model(recipe)
    torch.manual_seed(3)
    crop, labels = training_mode(recipe, model).transform(model)(*to_tv_tensors(image, label))
    assert crop.shape == (3, CROP, CROP) and labels.shape == (16, 16)

    padded_image = np.pad(image, ((MARGIN, MARGIN), (MARGIN, MARGIN), (0, 0)), mode="reflect")
    padded_label = np.pad(label, MARGIN, mode="constant", constant_values=255)
    row, col = _find_crop(padded_image, crop.permute(1, 2, 0).numpy())
    expected = padded_label[row + MARGIN : row + CROP - MARGIN : STRIDE, col + MARGIN : col + CROP - MARGIN : STRIDE]
    assert np.array_equal(labels.numpy(), expected)
    assert (expected != 255).all()  # every label the loss sees lies inside the image

    part = TrainedPart(model, recipe)
    scores = part(crop[None], labels[None].long())
    assert scores.shape == (1, 21, 16, 16)
    loss, _ = training_step(part, build_optimizer(model, recipe), crop[None], labels[None].long(), recipe=recipe,
                            dist_info=Distributed(device=torch.device("cpu")))
    assert torch.isfinite(loss)


def test_quick_frontend_crops_the_padded_embedded_image():
    recipe = get_recipe("frontend", "quick")
    model = build_model(recipe)
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    label = np.zeros((96, 128), np.uint8)
    crop, labels = training_mode(recipe, model).transform(model)(*to_tv_tensors(image, label))
    assert crop.shape == (3, 468, 468) and labels.shape == (12, 12) and (labels == 0).all()


def test_a_crop_that_does_not_fit_the_margin_is_a_recipe_error():
    recipe = dataclasses.replace(get_recipe("frontend", "quick"), crop=470)
    with pytest.raises(RecipeError, match="crop - 372"):
        training_mode(recipe, model := build_model(recipe)).transform(model)
    deeplab = dataclasses.replace(get_recipe("deeplab_v1", "quick"), crop=321, padded_crops=True,
                                  loss_on_score_map=False)
    with pytest.raises(RecipeError, match="input margin"):
        training_mode(deeplab, build_model(deeplab))


def test_paper_frontend_step_costs_the_authors_arithmetic():
    """VGG-16 without pool4/5 on a 500x500 input, counted by hand per layer (2 FLOPs per multiply-add,
    x3 for forward + backward), batch 14."""
    side, flops, channels = 500, 0, 3
    for block, (width, count) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        dilation = 2 if block == 4 else 1
        for _ in range(count):
            side -= 2 * dilation
            flops += 2 * 9 * channels * width * side * side
            channels = width
        if block < 3:
            side = -(-side // 2)  # Caffe's ceil-mode pooling
    side -= 6 * 4  # fc6: 7x7, dilation 4
    flops += 2 * 49 * 512 * 4096 * side**2 + 2 * 4096 * 4096 * side**2 + 2 * 4096 * 21 * side**2
    assert side == 16
    expected = 3 * 14 * flops / 1e12
    assert paper_profile_flops("frontend")["paper_tflop_per_step"] == pytest.approx(expected, rel=1e-6)
    assert 8.7 < expected < 8.9


def test_joint_fine_tuning_trains_front_end_and_context_on_padded_crops(tmp_path, shared_dir):
    """fyu/dilation docs/training.md: the staged network fine-tuned as a whole at lr 1e-5, batch 14,
    on the padded 500x500 crops, the loss on the context module's 16x16 output."""
    image, label = _genuine_sample(shared_dir)
    recipe = dataclasses.replace(get_recipe("context_basic_joint", "paper"), pretrained=False, width=1 / 16,
                                 batch_size=1)
    assert (recipe.architecture, recipe.init_from, recipe.lr, recipe.train_only) == ("context_basic",
                                                                                     "context_basic", 1e-5, None)
    staged = tmp_path / "staged.pt"
    torch.save(build_model(dataclasses.replace(recipe, init_from=None)).state_dict(), staged)
    model = build_model(recipe, staged)
    crop, labels = training_mode(recipe, model).transform(model)(*to_tv_tensors(image, label))
    part = TrainedPart(model, recipe)
    assert part(crop[None], labels[None].long()).shape == (1, 21, 16, 16)
    optimizer = build_optimizer(model, recipe)
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in model.parameters()}  # front end and context module alike
