"""DeepLab-LargeFOV as its released prototxts lay it out (issue 22 item 5): ``pool5a`` (average
pooling 3x3, stride 1, pad 1 between pool5 and fc6) and the test procedure of ``test.prototxt``
(pad to 513 x 513 with the mean pixel, ``Interp`` zoom x8 with score k on pixel 8k), checked
against independent numpy transcriptions on a genuine VOC image."""

import numpy as np
import torch

import methods
from benchmarks.data.voc import read_image


def test_pool5a_averages_3x3_with_caffe_border_divisor():
    torch.manual_seed(0)
    model = methods.create("deeplab_v1", width=1 / 16).eval()
    seen = []
    model.pool5a.register_forward_hook(lambda _m, inputs, output: seen.append((inputs[0], output)))
    model.fc6.register_forward_hook(lambda _m, inputs, output: seen.append((inputs[0], output)))
    with torch.no_grad():
        model(torch.randn(1, 3, 97, 121))
    (pool5, pooled), (fc6_input, _) = seen
    assert fc6_input is pooled
    padded = np.pad(pool5[0].numpy(), ((0, 0), (1, 1), (1, 1)))  # Caffe: zeros, and the sum divided by 9 everywhere
    h, w = pool5.shape[-2:]
    expected = sum(padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9
    np.testing.assert_allclose(pooled[0].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_published_procedure_pads_to_513_with_the_mean_and_zooms_score_k_onto_pixel_8k(shared_dir):
    voc = shared_dir / "data" / "voc-real-mini" / "VOCdevkit" / "VOC2012"
    image_id = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    image = read_image(voc / "JPEGImages" / f"{image_id}.jpg").astype(np.float32)
    height, width = image.shape[:2]
    torch.manual_seed(0)
    model = methods.create("deeplab_v1", width=1 / 16).eval()
    model.input_convention = model.paper_input_convention
    convention = model.input_convention
    # the data layer: mean-subtracted BGR, padded at the bottom and right with the mean (0 after subtraction)
    bgr = image[:, :, ::-1] - np.array(convention.mean, np.float32)
    padded = np.zeros((513, 513, 3), np.float32)
    padded[:height, :width] = bgr
    with torch.no_grad():
        scores = model.score_map(torch.from_numpy(padded).permute(2, 0, 1)[None])[0].numpy()
    assert scores.shape[-2:] == (65, 65)
    # Interp zoom_factor 8: 65 -> (65 - 1) * 8 + 1 = 513, corners aligned, so pixel y reads score y / 8
    y, x = np.arange(height) / 8, np.arange(width) / 8
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    ty, tx = (y - y0)[:, None], (x - x0)[None, :]
    s = scores
    zoomed = ((1 - ty) * (1 - tx) * s[:, y0][:, :, x0] + (1 - ty) * tx * s[:, y0][:, :, x0 + 1]
              + ty * (1 - tx) * s[:, y0 + 1][:, :, x0] + ty * tx * s[:, y0 + 1][:, :, x0 + 1])
    expected = np.exp(zoomed - zoomed.max(0)) / np.exp(zoomed - zoomed.max(0)).sum(0)
    with torch.no_grad():
        measured = model.published_probabilities(convention.normalize(torch.from_numpy(image).permute(2, 0, 1)[None]))
    assert measured.shape == (1, 21, height, width)
    np.testing.assert_allclose(measured[0].numpy(), expected, atol=1e-5)


def test_a_side_longer_than_513_is_padded_to_the_next_8k_plus_1():
    torch.manual_seed(0)
    model = methods.create("deeplab_v1", width=1 / 16).eval()
    seen = []
    model.conv1_1.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].shape[-2:]))
    with torch.no_grad():
        probabilities = model.published_probabilities(torch.randn(1, 3, 40, 600))
    assert seen == [(513, 601)] and probabilities.shape == (1, 21, 40, 600)
