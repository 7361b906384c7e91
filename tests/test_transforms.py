"""Joint transforms: labels pad with 255, move with the image, resize with nearest neighbour; the
input conventions normalise the mean pixel to zero."""

import dataclasses

import numpy as np
import torch

from benchmarks.data.transforms import RandomScale, SubsampleLabel, to_tv_tensors, train_transform
from benchmarks.data.voc import read_image, read_label
from methods.common import CAFFE_VGG, TORCHVISION_VGG


def _coupled(height=40, width=30):
    """An image whose red channel encodes the label, so any misalignment shows."""
    label = (np.arange(height * width).reshape(height, width) % 21).astype(np.uint8)
    image = np.stack([label * 10, np.full_like(label, 50), np.full_like(label, 60)], axis=-1)
    return image, label


def test_crop_pads_label_with_ignore_and_image_with_the_fill():
    image, label = _coupled()
    torch.manual_seed(0)
    out_image, out_label = train_transform(64, flip=False, image_fill=(123, 117, 104))(*to_tv_tensors(image, label))
    assert out_image.shape == (3, 64, 64) and out_label.shape == (64, 64)
    padded = out_label == 255
    assert int(padded.sum()) == 64 * 64 - 40 * 30
    assert out_image[:, padded].T.unique(dim=0).tolist() == [[123, 117, 104]]
    assert torch.equal(out_image[0][~padded], (out_label[~padded] * 10).to(torch.uint8))


def test_flip_and_crop_move_image_and_label_together():
    image, label = _coupled(80, 90)
    transform = train_transform(33, flip=True)
    flipped = 0
    for seed in range(20):
        torch.manual_seed(seed)
        out_image, out_label = transform(*to_tv_tensors(image, label))
        assert torch.equal(out_image[0], (out_label * 10).to(torch.uint8))
        rows = out_label.numpy()
        flipped += int(not any(np.array_equal(rows, label[r:r + 33, c:c + 33])
                               for r in range(48) for c in range(58)))
    assert 0 < flipped < 20


def test_random_scale_uses_nearest_for_labels():
    image, label = _coupled(60, 60)
    torch.manual_seed(1)
    out_image, out_label = RandomScale(0.5, 1.5)(*to_tv_tensors(image, label))
    assert out_image.shape[1:] == out_label.shape and out_label.shape != (60, 60)
    assert set(out_label.unique().tolist()) <= set(np.unique(label).tolist())


def test_deeplab_labels_subsampled_by_eight():
    image, label = _coupled(321, 321)
    _, out_label = SubsampleLabel(8)(*to_tv_tensors(image, label))
    assert out_label.shape == (41, 41)
    assert torch.equal(out_label, torch.from_numpy(label[::8, ::8]))


def test_input_conventions_centre_the_mean_pixel():
    for convention in (CAFFE_VGG, TORCHVISION_VGG):
        mean_rgb = convention.mean[::-1] if convention.channel_order == "BGR" else convention.mean
        pixel = torch.tensor(mean_rgb).view(3, 1, 1).expand(3, 2, 2)
        assert convention.normalize(pixel).abs().max() < 1e-5
    red = torch.tensor([255.0, 0.0, 0.0]).view(3, 1, 1)
    assert CAFFE_VGG.normalize(red)[2, 0, 0] == 255.0 - CAFFE_VGG.mean[2]  # red is the last Caffe channel


def test_the_fcn_paper_recipe_trains_on_whole_genuine_images_without_a_crop(shared_dir):
    """FCN's reference solver: batch 1, whole images, no augmentation (no crop, no flip)."""
    from benchmarks.networks import build_model
    from benchmarks.recipes import get_recipe
    from benchmarks.training_mode import training_mode

    recipe = dataclasses.replace(get_recipe("fcn32s", "paper"), pretrained=False, width=1 / 16)
    assert (recipe.crop, recipe.flip, recipe.scale, recipe.batch_size) == (None, False, None, 1)
    voc = shared_dir / "data" / "voc-real-mini" / "VOCdevkit" / "VOC2012"
    image_id = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]
    image = read_image(voc / "JPEGImages" / f"{image_id}.jpg")
    label = read_label(voc / "SegmentationClass" / f"{image_id}.png")
    model = build_model(recipe)
    got_image, got_label = training_mode(recipe, model).transform(model)(*to_tv_tensors(image, label))
    assert np.array_equal(got_image.permute(1, 2, 0).numpy(), image) and np.array_equal(got_label.numpy(), label)
