"""The dense CRF: the torch backend (permutohedral lattice in PyTorch) against the reference
pydensecrf2 on genuine VOC images, the lattice against exact Gaussian filtering, bad input."""

import dataclasses

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from benchmarks.crf import dense_crf as dense_crf_module
from benchmarks.crf.dense_crf import NORMALISATIONS, CRFParams, dense_crf, dense_crf_batch
from benchmarks.crf.permutohedral import PermutohedralLattice, _code, _radix
from benchmarks.data.voc import VOCSplit
from benchmarks.evaluation import ConfusionMatrix

MINI = "data/voc-real-mini"
CLASSES = 21



def _chw(image: np.ndarray) -> torch.Tensor:
    """An ``H x W x 3`` uint8 array as the ``3 x H x W`` tensor the CRF takes."""
    return torch.from_numpy(image).permute(2, 0, 1)

def _label_probabilities(label: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """A network-like softmax made from the ground truth: one-hot (ignore -> uniform), blurred
    8 px, multiplied by log-normal noise and renormalised."""
    onehot = np.full((CLASSES, *label.shape), 1.0 / CLASSES, dtype=np.float32)
    valid = label != 255
    onehot[:, valid] = 0.0
    onehot[label[valid], np.nonzero(valid)[0], np.nonzero(valid)[1]] = 1.0
    blurred = np.stack([gaussian_filter(channel, 8.0) for channel in onehot]) + 0.02
    noisy = blurred * np.exp(rng.normal(0.0, 0.6, blurred.shape)).astype(np.float32)
    return torch.from_numpy(noisy / noisy.sum(0, keepdims=True))


def _random_probabilities(shape: tuple[int, int], rng: np.random.Generator) -> torch.Tensor:
    logits = torch.from_numpy(rng.normal(0.0, 2.0, (CLASSES, *shape)).astype(np.float32))
    return torch.softmax(logits, 0)


@pytest.mark.parametrize("normalisation", NORMALISATIONS)
@pytest.mark.parametrize("kind", ["labels", "random"])
def test_torch_backend_agrees_with_pydensecrf_on_genuine_voc(shared_dir, kind, normalisation):
    """Each normalisation against pydensecrf2's own (``NORMALIZE_AFTER``, ``NORMALIZE_SYMMETRIC``)."""
    split = VOCSplit(shared_dir / MINI, "val")
    rng = np.random.default_rng(0)
    params = CRFParams(normalisation=normalisation)  # DeepLab's w2 = 3, θγ = 3 and w1 = 5, θα = 50, θβ = 3
    same = total = changed = 0
    scores = {name: ConfusionMatrix(CLASSES) for name in ("pydensecrf", "torch")}
    for index in range(0, len(split), 13):
        sample = split[index]
        probs = (_label_probabilities(sample.label, rng) if kind == "labels"
                 else _random_probabilities(sample.label.shape, rng))
        reference = dense_crf(_chw(sample.image), probs, params, backend="pydensecrf").argmax(0)
        ours = dense_crf(_chw(sample.image), probs, params, backend="torch").argmax(0)
        same += int((reference == ours).sum())
        total += reference.numel()
        changed += int((reference != probs.argmax(0)).sum())
        scores["pydensecrf"].update(reference, torch.from_numpy(sample.label))
        scores["torch"].update(ours, torch.from_numpy(sample.label))
    agreement = same / total
    miou = {name: 100 * matrix.metrics()["miou"] for name, matrix in scores.items()}
    print(f"\n{kind}, {normalisation}: {total} pixels of 6 images, label agreement {100 * agreement:.3f}%, "
          f"mIoU pydensecrf {miou['pydensecrf']:.3f} torch {miou['torch']:.3f} "
          f"(CRF changed {100 * changed / total:.1f}% of labels)")
    assert changed / total > 0.02  # the CRF does change the labels: the agreement is not trivial
    assert agreement >= 0.995
    assert abs(miou["pydensecrf"] - miou["torch"]) <= 0.1


def test_parameter_mapping_each_parameter_matters_in_both_backends():
    """SPEC §5 mapping: each of w1, θα, θβ, w2, θγ changes pydensecrf's answer and the torch
    backend (which builds the kernels from the SPEC formula) follows it, in both normalisations."""
    rng = np.random.default_rng(1)
    image = np.kron(rng.integers(0, 256, (6, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    probs = _random_probabilities(image.shape[:2], rng)
    base = CRFParams(w1=4.0, theta_alpha=20.0, theta_beta=10.0, w2=3.0, theta_gamma=3.0, iterations=5)
    variants = [base] + [CRFParams(**{**base.__dict__, name: value}) for name, value in
                         (("w1", 9.0), ("theta_alpha", 60.0), ("theta_beta", 40.0), ("w2", 0.0),
                          ("theta_gamma", 8.0))]
    answers = []
    for params in variants:
        reference = dense_crf(_chw(image), probs, params, backend="pydensecrf")
        ours = dense_crf(_chw(image), probs, params, backend="torch")
        assert torch.allclose(reference, ours, atol=1e-3), params
        symmetric = dataclasses.replace(params, normalisation="symmetric")
        assert torch.allclose(dense_crf(_chw(image), probs, symmetric, backend="pydensecrf"),
                              dense_crf(_chw(image), probs, symmetric, backend="torch"), atol=1e-3), symmetric
        answers.append(reference)
    for params, answer in zip(variants[1:], answers[1:], strict=True):
        assert (answer - answers[0]).abs().max() > 1e-2, f"{params} did not change the reference's answer"


def test_large_weights_switch_to_softmax_and_still_agree(shared_dir, monkeypatch):
    """On the CPU the torch backend normalises with exp2 while no term can overflow, and with
    torch.softmax beyond; at w1 = 60 some chunks of pixels take each path, and the answer still
    matches pydensecrf."""
    sample = VOCSplit(shared_dir / MINI, "val")[0]
    probs = _label_probabilities(sample.label, np.random.default_rng(7))
    paths = []
    normalise = dense_crf_module._normalise
    monkeypatch.setattr(dense_crf_module, "_normalise",
                        lambda *args, exp2, **kw: paths.append(exp2) or normalise(*args, exp2=exp2, **kw))
    params = CRFParams(w1=60.0, normalisation="symmetric")  # "after" bounds each message by w: 60 nats < 100 bits
    ours = dense_crf(_chw(sample.image), probs, params, backend="torch")
    reference = dense_crf(_chw(sample.image), probs, params, backend="pydensecrf")
    assert 0 < sum(paths) < len(paths)
    assert (ours - reference).abs().max() < 5e-3
    assert (ours.argmax(0) == reference.argmax(0)).float().mean() >= 0.999


def test_no_pairwise_weight_returns_the_input():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    probs = _random_probabilities((20, 30), rng)
    refined = dense_crf(_chw(image), probs, CRFParams(w1=0.0, w2=0.0), backend="torch")
    assert torch.allclose(refined, probs, atol=1e-5)


def test_lattice_approximates_exact_gaussian_filtering():
    """Normalised filtering of a random field by the lattice against the exact dense Gaussian sum
    (the lattice is the reference's approximation: close, not equal)."""
    rng = np.random.default_rng(3)
    features = torch.from_numpy(rng.uniform(0, 6, (400, 3)).astype(np.float32))
    values = torch.from_numpy(rng.normal(size=(400, 2)).astype(np.float32))
    weights = torch.exp(-torch.cdist(features, features) ** 2 / 2)
    exact = (weights @ values) / weights.sum(1, keepdim=True)
    lattice = PermutohedralLattice(features)
    approximate = lattice.filter(values) / lattice.filter(torch.ones(400, 1))
    correlation = np.corrcoef(exact.flatten().numpy(), approximate.flatten().numpy())[0, 1]
    assert correlation > 0.95
    assert (exact - approximate).abs().mean() < 0.1 * exact.abs().mean() + 0.05


def test_vertex_names_are_one_to_one():
    """The mixed-radix code that names lattice vertices (and simplices) gives distinct rows distinct
    codes, whichever column is widest (a first column wider than the last once collided)."""
    rng = np.random.default_rng(6)
    rows = torch.from_numpy(np.stack([rng.integers(-40, 40, 5000), rng.integers(0, 3, 5000),
                                      rng.integers(-2, 2, 5000)], 1))
    radix = _radix(list(rows.unbind(1)), 4)
    assert radix[2] == torch.int32  # 88 x 11 x 12 codes fit the narrower type, which sorts faster
    for shift in (0, 4, -4):  # neighbours (+-margin in a column) are named without collisions too
        moved = rows.clone()
        moved[:, 0] += shift
        codes = _code(list(moved.unbind(1)), radix)
        assert torch.unique(codes).numel() == torch.unique(moved, dim=0).shape[0]
    wide = _radix([torch.tensor([0, 2**20]), torch.tensor([0, 2**20])], 0)
    assert wide[2] == torch.long and int(_code([torch.tensor([2**20]), torch.tensor([2**20])], wide)) == 2**40 + 2**21
    too_wide = [torch.tensor([0, 2**40]), torch.tensor([0, 2**40])]
    assert _radix(too_wide, 0) is None  # too wide for int64: said, not wrapped


def test_batch_equals_one_image_at_a_time():
    rng = np.random.default_rng(4)
    images = [_chw(rng.integers(0, 256, shape, dtype=np.uint8)) for shape in ((17, 23, 3), (31, 12, 3))]
    probs = [_random_probabilities(tuple(image.shape[1:]), rng) for image in images]
    together = dense_crf_batch(images, probs, CRFParams(), backend="torch")
    for image, p, batched in zip(images, probs, together, strict=True):
        alone = dense_crf(image, p, CRFParams(), backend="torch")
        assert batched.shape == p.shape
        assert torch.allclose(batched, alone, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "pydensecrf"])
def test_bad_input_is_a_clear_error(backend):
    rng = np.random.default_rng(5)
    image = _chw(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8))
    probs = _random_probabilities((10, 12), rng)
    cases = [
        (image, _random_probabilities((12, 10), rng), "must match"),
        (image, probs * 2, "summing to 1"),
        (image, torch.where(probs > 0.5, float("nan"), probs), "NaN"),
        (image, probs.to(torch.float16), "float32/float64"),
        (image, (probs * 100).to(torch.int64), "float32/float64"),
        (image.float(), probs, "uint8"),
        (image.permute(1, 2, 0).numpy(), probs, "uint8"),
        (image[0], probs, "uint8"),
        (image, probs[0], "C x H x W"),
        (image, -probs, "non-negative"),
    ]
    for bad_image, bad_probs, message in cases:
        with pytest.raises(ValueError, match=message):
            dense_crf(bad_image, bad_probs, CRFParams(), backend=backend)
    with pytest.raises(ValueError, match="unknown CRF backend"):
        dense_crf(image, probs, CRFParams(), backend="convcrf")
    with pytest.raises(ValueError, match="2 images but 1"):
        dense_crf_batch([image, image], [probs], CRFParams(), backend=backend)
