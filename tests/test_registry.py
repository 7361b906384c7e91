"""Registry-driven tests: every registered method builds, runs forward and backward, has the
score stride of SPEC section 2 and the parameter counts of the papers."""

import re

import pytest
import torch
from conftest import SPEC_SCORE_STRIDE
from torch import nn

import methods
from methods.errors import MethodError
from methods.mmseg import register_mmseg_head
from methods.registry import register

ALL = methods.list_methods()


def test_registry_lists_the_spec_methods():
    assert set(SPEC_SCORE_STRIDE) <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_at_input_resolution(name):
    torch.manual_seed(0)
    model = methods.create(name, num_classes=5, width=1 / 16).train()
    x = torch.randn(2, 3, 67, 83, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 5, 67, 83)
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert bool(missing) == model.unused_parameters, missing  # only a model that says so leaves some unused


@pytest.mark.parametrize("name", ALL)
def test_score_stride_matches_spec_and_the_measured_map(name):
    model = methods.create(name, width=1 / 32).eval()
    assert model.score_stride == SPEC_SCORE_STRIDE[name]
    # measured: growing the input by 128 px grows the score map by 128 / stride units
    with torch.no_grad():
        small = model.score_map(torch.zeros(1, 3, 128, 128)).shape[-1]
        large = model.score_map(torch.zeros(1, 3, 256, 256)).shape[-1]
    assert large - small == 128 // model.score_stride


def test_unknown_and_duplicate_names_are_errors():
    with pytest.raises(KeyError, match=r"registered methods: .*fcn32s"):
        methods.create("fcn64s")
    with pytest.raises(ValueError, match="already registered"):
        register("fcn8s", paper="x")(lambda num_classes=21: nn.Identity())
    with pytest.raises(ValueError, match=r"\+crf"):
        register("mine+crf", paper="x")(lambda num_classes=21: nn.Identity())


@pytest.mark.parametrize("name", ["../../../escaped_probe", "a/b", "..", ".hidden", "-flag", "a..b", "", "x y"])
def test_a_method_name_is_a_plain_name(name):
    """A registered name becomes a folder under --runs and --results: a name that could leave them
    (issue 26: ``../../../escaped_probe`` made ``run`` write outside both) is refused at registration."""
    with pytest.raises(ValueError, match="not a plain name"):
        register(name, paper="x")(lambda num_classes=21: nn.Identity())
    assert name not in methods.list_methods()


def test_a_new_head_is_a_ten_line_registration():
    from methods.common import SegmentationModel

    class Tiny(SegmentationModel):
        score_stride = 1
        paper = "none"

        def __init__(self, num_classes):
            super().__init__()
            self.head = nn.Conv2d(3, num_classes, 3, padding=1)
            self.final_upsample = methods.common.CaffeInterp()

        def score_map(self, x):
            return self.head(x)

    register("test_tiny_head", paper="a test")(lambda num_classes=21: Tiny(num_classes))
    assert "test_tiny_head" in methods.list_methods()
    assert methods.create("test_tiny_head", num_classes=4)(torch.zeros(1, 3, 9, 9)).shape == (1, 4, 9, 9)


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(("name", "paper_count"), [("fcn32s", 134e6), ("fcn8s", 134e6), ("deeplab_v1", 20.5e6)])
def test_parameter_counts_match_the_papers(name, paper_count):
    # FCN Table 1 (FCN-VGG16: 134M); DeepLab v1 Table 2 (DeepLab-LargeFOV: 20.5M)
    with torch.device("meta"):
        model = methods.create(name)
    assert abs(trainable(model) - paper_count) / paper_count < 0.01


def test_basic_context_module_has_64_c_squared_weights():
    c = 21
    module = methods.create("context_basic", width=1 / 16).context
    weights = sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Conv2d))
    assert weights == 64 * c * c  # Yu & Koltun Sec 3: 7 layers of 3x3 C->C plus one 1x1


def test_upsampling_is_fixed_bilinear_and_score_layers_start_at_zero():
    model = methods.create("fcn8s", width=1 / 16)
    for name in ("score_fr", "score_pool4", "score_pool3"):
        assert getattr(model, name).weight.abs().sum() == 0
    # bilinear x2 kernel, worked by hand: taps 1/4, 3/4, 3/4, 1/4
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.equal(model.upscore2.weight[0, 0], torch.outer(taps, taps))
    assert not any("upscore" in n for n, _ in model.named_parameters())
    # a constant score map upsamples to the same constant away from the borders
    up = model.upscore2(torch.ones(1, 21, 6, 6))
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.ones(()))


def test_fcn_at_once_scales_the_skips():
    model = methods.create("fcn8s", width=1 / 16, at_once=True)
    assert model.scale_pool4.factor == 0.01 and model.scale_pool3.factor == 1e-4
    assert methods.create("fcn8s", width=1 / 16).scale_pool3.factor == 1.0


def test_staged_fcn_initialisation_copies_the_coarser_stage(tmp_path):
    """FCN Sec 4.2 through the harness's staged build (``networks.build_model`` of a recipe with
    ``init_from``): every tensor of FCN-32s is copied, the new skip score layer stays at zero."""
    from benchmarks.files import save_torch
    from benchmarks.networks import build_model
    from benchmarks.recipes import get_recipe

    recipe = get_recipe("fcn16s", "quick")
    fcn32 = methods.create("fcn32s", width=recipe.width)
    with torch.no_grad():
        fcn32.score_fr.weight.normal_()
    save_torch(fcn32.state_dict(), tmp_path / "fcn32s.pt")
    fcn16 = build_model(recipe, tmp_path / "fcn32s.pt")
    assert all(torch.equal(fcn16.state_dict()[name], value) for name, value in fcn32.state_dict().items())
    assert sorted(set(fcn16.state_dict()) - set(fcn32.state_dict())) == ["score_pool4.bias", "score_pool4.weight"]
    assert not fcn16.score_pool4.weight.any() and not fcn16.score_pool4.bias.any()
    # with its skip at zero, FCN-16s starts as FCN-32s's scores upsampled x2
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = fcn16.upscore2(fcn32.eval().score_map(x))
        assert torch.allclose(fcn16.eval().score_map(x), expected, atol=1e-6)
        assert expected.abs().sum() > 0


def test_frontend_deploy_geometry():
    # fyu/dilation: a 900x900 input (500 px + two 186-px margins, padded in advance) gives 66x66
    model = methods.create("frontend", width=1 / 32).eval()
    model.frontend.pad.margin = 0
    with torch.no_grad():
        assert model.frontend_scores(torch.zeros(1, 3, 900, 900)).shape[-2:] == (66, 66)


def test_reflection_padding_is_reflect_101_and_handles_small_images():
    from methods.common import ReflectPad101

    x = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    padded = ReflectPad101(5)(x)
    # BORDER_REFLECT_101 of 0 1 2 3, repeated off both edges: ... 1 2 3 2 1 | 0 1 2 3 | 2 1 0 1 2
    assert padded[0, 0, 0].tolist() == [1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2]


@pytest.mark.parametrize("built", [None, nn.Conv2d(3, 21, 1)])
def test_a_builder_must_return_a_segmentation_model(built):
    """Builders returning ``None`` or a bare ``nn.Conv2d`` ended in tracebacks deep in the harness
    (issue 26): ``create`` names the method and what it got."""
    name = f"returns_{type(built).__name__.lower()}"
    register(name, paper="a test")(lambda num_classes=21: built)
    with pytest.raises(ValueError, match=rf"method '{name}' .* returned {type(built).__name__}, not a"):
        methods.create(name)


def test_a_user_builder_that_raises_is_one_error_naming_the_method():
    """A registered builder raising ValueError ended `compare`/`convert-caffe` in a traceback (re-probe
    of issue 26): it is a MethodError naming the method, the builder and what it raised."""
    def explodes(num_classes=21):
        raise ValueError("builder exploded\nsecond line")
    explodes.__module__ = "my_heads_module"
    register("explodes", paper="a test")(explodes)
    with pytest.raises(MethodError, match=r"^the builder of method 'explodes' \(my_heads_module\..*explodes\) raised "
                                          r"ValueError: builder exploded; fix the module that registers it$"):
        methods.create("explodes")


class _NotAnException(BaseException):
    pass


@pytest.mark.parametrize(("raised", "words"), [(SystemExit(0), "SystemExit: 0"),
                                               (_NotAnException("odd"), "_NotAnException: odd")])
def test_a_user_builder_that_calls_sys_exit_is_one_error_naming_the_method(raised, words):
    """A builder calling ``sys.exit(0)`` ended `convert-caffe` with exit 0, no output and no file,
    and one raising a BaseException of its own ended in a traceback (re-probe 3 of issue 26): each
    is a MethodError like any other builder failure."""
    def exits(num_classes=21):
        raise raised
    exits.__module__ = "my_heads_module"
    name = f"exits_{type(raised).__name__.lower()}"
    register(name, paper="a test")(exits)
    with pytest.raises(MethodError, match=rf"^the builder of method '{name}' \(my_heads_module\..*exits\) raised "
                                          rf"{words}; fix the module that registers it$"):
        methods.create(name)


def test_ctrl_c_while_a_user_builder_runs_stays_an_interrupt():
    def interrupted(num_classes=21):
        raise KeyboardInterrupt
    interrupted.__module__ = "my_heads_module"
    register("interrupted", paper="a test")(interrupted)
    with pytest.raises(KeyboardInterrupt):
        methods.create("interrupted")


@pytest.mark.parametrize(("head", "words"), [({"type": "NoSuchHead", "channels": 64}, "KeyError: 'NoSuchHead is not"),
                                             ({"type": "FCNHead", "channels": -5}, "RuntimeError")])
def test_an_mmseg_head_that_does_not_build_is_one_error(head, words):
    register_mmseg_head(f"bad_{head['channels']}", head, paper="a test")
    with pytest.raises(MethodError, match=rf"^mmseg head '{head['type']}' does not build from its config: {words}"):
        methods.create(f"bad_{head['channels']}")


@pytest.mark.parametrize("head_cfg", ["prototype", ["type"], {"channels": 64}])
def test_an_mmseg_head_config_that_is_not_a_dict_with_a_type_is_refused_when_registered(head_cfg):
    """``register_mmseg_head(name, "prototype")`` passed the ``"type" in head_cfg`` check and failed
    on ``head_cfg['type']`` (``--import`` then named methods/mmseg.py, re-probe 3 of issue 26)."""
    with pytest.raises(MethodError, match=r"^head_cfg of 'cfg' must be a dict whose 'type' is an mmsegmentation"):
        register_mmseg_head("cfg", head_cfg, paper="a test")


def test_scores_of_the_wrong_shape_are_one_error():
    """A head giving 20 maps, or flat scores, ended training in torch's IndexError (re-probe of issue 26)."""
    from benchmarks.recipes import get_recipe
    from benchmarks.train import _loss

    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    for scores in (torch.zeros(2, 20, 8, 8), torch.zeros(2, 21)):
        shape = re.escape(f"gave scores of shape {tuple(scores.shape)}")
        with pytest.raises(MethodError, match=shape + r".*\(batch, 21, height"):
            _loss(scores, labels, get_recipe("fcn32s", "quick"), world_size=1)


def test_a_score_map_that_is_not_four_dimensional_is_one_error():
    """A user model whose score_map flattened its scores ended `compare` in F.interpolate's
    traceback (re-probe of issue 26): forward names the model, the shape and what it must be."""
    fcn = methods.create("fcn32s", width=1 / 16)

    class Flattens(type(fcn)):
        def score_map(self, x: torch.Tensor) -> torch.Tensor:
            return super().score_map(x).flatten(1)

    fcn.__class__ = Flattens
    image = torch.zeros(1, 3, 64, 64)
    with pytest.raises(MethodError, match=r"^Flattens.score_map returned scores of shape \(1, \d+\) for an input of "
                                          r"shape \(1, 3, 64, 64\); it must return \(batch, classes, height, width\), "
                                          r"none of them 0$"):
        fcn(image)


@pytest.mark.parametrize(("post", "words"), [(lambda s: None, r"returned NoneType, not a tensor"),
                                             (lambda s: (s,), r"returned tuple, not a tensor"),
                                             (lambda s: s.detach().numpy(), r"returned ndarray, not a tensor"),
                                             (lambda s: s[:, :, :0], r"returned scores of shape \(1, 21, 0, \d+\)"),
                                             (lambda s: s.long(), r"returned scores of dtype torch.int64; they")])
def test_a_score_map_that_is_not_a_tensor_or_is_empty_is_one_error(post, words):
    """score_map returning None, a tuple, an array, a map of height 0 or integer scores ended
    `compare` in F.interpolate's AttributeError, RuntimeError or NotImplementedError (re-probe 3 of
    issue 26)."""
    fcn = methods.create("fcn32s", width=1 / 16)

    class Returns(type(fcn)):
        def score_map(self, x: torch.Tensor) -> object:
            return post(super().score_map(x))

    fcn.__class__ = Returns
    with pytest.raises(MethodError, match=rf"^Returns.score_map {words}"):
        fcn(torch.zeros(1, 3, 64, 64))


def test_a_score_map_that_calls_sys_exit_is_one_error():
    """score_map calling ``sys.exit(0)`` ended `compare` with exit 0 and no record (re-probe 3 of
    issue 26)."""
    fcn = methods.create("fcn32s", width=1 / 16)

    class Exits(type(fcn)):
        def score_map(self, x: torch.Tensor) -> torch.Tensor:
            raise SystemExit(0)

    fcn.__class__ = Exits
    with pytest.raises(MethodError, match=r"^Exits.score_map called sys.exit\(0\); it must return scores"):
        fcn(torch.zeros(1, 3, 64, 64))
