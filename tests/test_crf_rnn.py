"""CRF-RNN (Zheng et al. 2015): at its initial parameters it is the dense CRF's torch backend on
genuine VOC images; its gradients are those of finite differences; training lowers its loss."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from torch.func import functional_call

from benchmarks.crf.crf_rnn import CRFRNN
from benchmarks.crf.dense_crf import NORMALISATIONS, CRFKernels, CRFParams, dense_crf_batch
from benchmarks.data.embedded_scenes import EmbeddedConfig, render_sample
from benchmarks.data.voc import VOCSplit

CLASSES = 21


def _noisy_probabilities(label: np.ndarray, rng: np.random.Generator, noise: float) -> torch.Tensor:
    """A network-like softmax from the ground truth: one-hot (ignore -> uniform), blurred, noisy."""
    onehot = np.full((CLASSES, *label.shape), 1.0 / CLASSES, dtype=np.float32)
    valid = label != 255
    onehot[:, valid] = 0.0
    onehot[label[valid], np.nonzero(valid)[0], np.nonzero(valid)[1]] = 1.0
    blurred = np.stack([gaussian_filter(channel, 8.0) for channel in onehot]) + 0.02
    noisy = blurred * np.exp(rng.normal(0.0, noise, blurred.shape)).astype(np.float32)
    return torch.from_numpy(noisy / noisy.sum(0, keepdims=True))


def test_initial_crf_rnn_is_the_dense_crf_on_genuine_voc(shared_dir):
    split = VOCSplit(shared_dir / "data/voc-real-mini", "val")
    rng = np.random.default_rng(0)
    samples = [split[index] for index in (0, 7)]  # cropped to 200 x 260 to keep the test fast
    images = [torch.from_numpy(sample.image[:200, :260]).permute(2, 0, 1).contiguous() for sample in samples]
    probs = [_noisy_probabilities(sample.label[:200, :260], rng, 1.5) for sample in samples]
    params = CRFParams()
    dense = dense_crf_batch(images, probs, params, backend="torch")
    model = CRFRNN(CLASSES, params).eval()
    assert model.iterations == params.iterations == 10
    with torch.no_grad():
        refined = model(images, [p.log() for p in probs])
    for ours, reference, p in zip(refined, dense, probs, strict=True):
        changed = float((reference.argmax(0) != p.argmax(0)).float().mean())
        difference = float((torch.softmax(ours, 0) - reference).abs().max())
        print(f"\nCRF changed {100 * changed:.1f}% of labels; CRF-RNN differs from it by {difference:.2e} at most")
        assert changed > 0.01  # the comparison is not trivial
        assert difference < 2e-5


@pytest.mark.parametrize("normalisation", NORMALISATIONS)
def test_gradients_match_finite_differences_in_float64(normalisation):
    """In both normalisations: "after" scales only the slice, so splat and slice are no longer each
    other's transpose and each needs its own gradient layout."""
    rng = np.random.default_rng(1)
    classes = 3
    image = torch.from_numpy(np.kron(rng.integers(0, 256, (3, 4, 3)), np.ones((2, 2, 1))).astype(np.uint8))
    image = image.permute(2, 0, 1).contiguous()  # 6 x 8 pixels in blocks of colour
    model = CRFRNN(classes, CRFParams(w1=4.0, theta_alpha=5.0, theta_beta=20.0, w2=2.0, theta_gamma=2.0,
                                      normalisation=normalisation), train_iterations=2).double()
    with torch.no_grad():  # away from the initial, symmetric point
        for parameter in model.parameters():
            parameter.add_(torch.from_numpy(rng.normal(0, 0.3, parameter.shape)))
    scores = torch.from_numpy(rng.normal(0, 1, (classes, 6, 8))).requires_grad_()
    kernels = CRFKernels([image], scores.device)
    names = [name for name, _ in model.named_parameters()]

    def refined(scores, *parameters):
        return functional_call(model, dict(zip(names, parameters, strict=True)), ([image], [scores], kernels))[0]

    inputs = (scores, *(p.detach().clone().requires_grad_() for p in model.parameters()))
    assert torch.autograd.gradcheck(refined, inputs, fast_mode=True)


def test_training_steps_on_embedded_data_lower_the_loss():
    config = EmbeddedConfig(seed=5, height=48, width=64)
    rng = np.random.default_rng(2)
    images, scores, labels = [], [], []
    for index in range(3):
        image, label, _ = render_sample(config, index)
        images.append(torch.from_numpy(image).permute(2, 0, 1).contiguous())
        scores.append(_noisy_probabilities(label, rng, 0.6).log())
        labels.append(torch.from_numpy(label.astype(np.int64)))
    model = CRFRNN(CLASSES, CRFParams(w1=2.0, w2=1.0, theta_alpha=20.0))
    kernels = CRFKernels(images, torch.device("cpu"))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def loss() -> torch.Tensor:
        refined = model(images, scores, kernels)
        pairs = zip(refined, labels, strict=True)
        return sum(F.cross_entropy(r[None], t[None], ignore_index=255) for r, t in pairs) / len(labels)

    losses = []
    for _ in range(4):
        optimiser.zero_grad()
        value = loss()
        value.backward()
        optimiser.step()
        losses.append(value.item())
    with torch.no_grad():
        final = loss().item()
    print(f"\nCRF-RNN training loss: {' '.join(f'{x:.4f}' for x in losses)} -> {final:.4f}")
    assert final < 0.97 * losses[0]
