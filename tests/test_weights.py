"""ImageNet VGG-16 weight surgery: a state dict in torchvision's layout (random values written by
the test) loads into every method with nothing unmapped, and the forward pass uses it."""

import pytest
import torch
import torch.nn.functional as F
import torchvision

import methods
from methods.vgg import WEIGHTS_ENV_VAR

FAMILIES = ["fcn32s", "fcn16s", "fcn8s", "deeplab_v1", "frontend", "context_basic", "context_large"]


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg16().state_dict().items()}
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=g) * 0.01 for k, s in shapes.items()}
    path = tmp_path_factory.mktemp("weights") / "vgg16-layout.pth"
    torch.save(state, path)
    return path, state


def trunk(model):
    return getattr(model, "frontend", model)


@pytest.mark.parametrize("name", FAMILIES)
def test_torchvision_layout_loads_with_nothing_unmapped(name, vgg_file):
    path, state = vgg_file
    model = methods.create(name, pretrained=True, weights_path=path).eval()
    report = model.load_report
    assert report.unmapped == []
    assert sorted(report.dropped) == ["classifier.6.bias", "classifier.6.weight"]
    assert len(report.mapped) == 30 and str(path) in model.weights_source
    assert set(report.mapped.values()) == set(state) - set(report.dropped)

    body = trunk(model)
    seen = {}
    hooks = [getattr(body, n).register_forward_hook(lambda m, i, o, n=n: seen.update({n: (i[0].clone(), o.clone())}))
             for n in ("conv1_1", "fc6", "fc7")]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()

    # conv1_1 computes with torchvision's features.0
    conv_in, conv_out = seen["conv1_1"]
    expected = F.conv2d(conv_in, state["features.0.weight"], state["features.0.bias"], padding=body.conv1_1.padding)
    assert torch.allclose(conv_out, expected, atol=1e-5)

    # fc6 at one unit is torchvision's Linear classifier.0 applied to the 7x7 window it sees:
    # the window's taps sit `dilation` units apart; DeepLab keeps taps 0, 3, 6 and every 4th filter
    fc6_in, fc6_out = seen["fc6"]
    d, k = body.fc6.dilation[0], body.fc6.kernel_size[0]
    pad = body.fc6.padding[0]
    padded = F.pad(fc6_in, (pad,) * 4)
    window = padded[0, :, 0 : d * (k - 1) + 1 : d, 0 : d * (k - 1) + 1 : d]
    if k == 7:
        full = window
        filters = slice(None)
    else:  # DeepLab-LargeFOV: a 3x3 kernel on the 7x7 grid's taps 0, 3, 6
        full = torch.zeros(512, 7, 7)
        full[:, ::3, ::3] = window
        filters = slice(None, None, 4)
    linear = F.linear(full.reshape(1, -1), state["classifier.0.weight"], state["classifier.0.bias"])[0, filters]
    assert torch.allclose(fc6_out[0, :, 0, 0], linear, atol=1e-4)

    # fc7 is torchvision's classifier.3 (DeepLab: every 4th row and column)
    fc7_in, fc7_out = seen["fc7"]
    step = 4096 // fc7_out.shape[1]
    w7 = state["classifier.3.weight"][::step, ::step]
    expected7 = F.linear(fc7_in[0, :, 0, 0], w7, state["classifier.3.bias"][::step])
    assert torch.allclose(fc7_out[0, :, 0, 0], expected7, atol=1e-4)


def test_weights_from_the_environment_variable(vgg_file, monkeypatch):
    path, state = vgg_file
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(path))
    model = methods.create("deeplab_v1", pretrained=True)
    assert torch.equal(model.conv5_3.weight, state["features.28.weight"])


def test_offline_without_a_file_says_where_to_put_it(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.delenv(WEIGHTS_ENV_VAR, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError) as error:
        methods.create("fcn32s", pretrained=True)
    message = str(error.value)
    assert str(tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth") in message
    assert WEIGHTS_ENV_VAR in message and "pretrained=False" in message


def test_bad_weight_requests_are_clear_errors(tmp_path, vgg_file):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        methods.create("fcn32s", pretrained=True, weights_path=tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="width=1"):
        methods.create("fcn32s", pretrained=True, width=0.5, weights_path=vgg_file[0])
    wrong = {k: v for k, v in vgg_file[1].items() if k != "features.0.weight"}
    torch.save(wrong, tmp_path / "partial.pth")
    with pytest.raises(KeyError, match=r"features\.0\.weight"):
        methods.create("fcn32s", pretrained=True, weights_path=tmp_path / "partial.pth")


def test_input_conventions_are_recorded():
    model = methods.create("fcn8s", width=1 / 16)
    assert model.input_convention is methods.TORCHVISION_VGG
    assert model.paper_input_convention is methods.CAFFE_VGG
    image = torch.tensor([[[10.0]], [[20.0]], [[30.0]]])  # R, G, B
    bgr = methods.CAFFE_VGG.normalize(image)
    assert torch.allclose(bgr.flatten(), torch.tensor([30 - 104.00699, 20 - 116.66877, 10 - 122.67892]))
