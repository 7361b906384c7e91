"""Training recipes (SPEC section 6): one frozen dataclass per method and profile.

The ``paper`` profile follows each paper's solver; ``quick`` derives from it with
``dataclasses.replace`` (reduced width, the embedded dataset's small images, a short schedule, a
mean loss and He-initialised trunks, since no ImageNet weights are reachable offline) and runs on
a 2-core CPU. ``--set key=value`` overrides any field, type-checked; every recipe is checked at
construction (ranges, choices, staging), so a bad value is a one-line error before any training.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass

import methods
from benchmarks.crf.dense_crf import NORMALISATIONS, CRFParams
from benchmarks.distributed import PRECISIONS
from benchmarks.errors import RecipeError
from benchmarks.validate import is_finite_number, is_whole_number

__all__ = ["CRF_STAGE_METHODS", "MAIN_COMMAND_CRFRNN", "MAIN_COMMAND_METHODS", "PROFILES", "Recipe", "RecipeError",
           "apply_overrides", "get_recipe", "paper_weights", "recipe_from_record", "recipe_methods"]


def _positive(value: object) -> bool:
    return is_finite_number(value) and value > 0


def _non_negative(value: object) -> bool:
    return is_finite_number(value) and value >= 0


def _count(value: object) -> bool:
    return is_whole_number(value) and value >= 1


_COUNT = "a whole number >= 1"
_RULES: tuple[tuple[str, Callable[[typing.Any], bool], str], ...] = (
    ("crf_grid", lambda v: sorted(name for name, _ in v) == ["theta_alpha", "theta_beta", "w1"]
     and all(isinstance(values, tuple) and values and all(_positive(x) for x in values) for _, values in v),
     "values > 0 for each of w1, theta_alpha and theta_beta (crf-search --w1 1,2 ... sets them; --set cannot)"),
    ("batch_size", _count, _COUNT),
    ("iterations", _count, _COUNT),
    ("crfrnn_iterations", _count, _COUNT),
    ("crfrnn_lr", _positive, "a finite number > 0"),
    ("crfrnn_images", lambda v: v is None or _count(v), f"none or {_COUNT}"),
    ("log_every", _count, _COUNT),
    ("checkpoint_every", _count, _COUNT),
    ("lr", lambda v: _positive(v) and v <= 1e12, "a number in (0, 1e12] (beyond, float32 updates overflow)"),
    ("momentum", lambda v: _non_negative(v) and v < 1, "a number in [0, 1)"),
    ("weight_decay", _non_negative, "a finite number >= 0"),
    ("gamma", _positive, "a finite number > 0"),
    ("poly_power", _non_negative, "a finite number >= 0"),
    ("bias_lr_multiplier", _non_negative, "a finite number >= 0"),
    ("lr_multipliers", lambda v: all(_non_negative(m) for _, m in v), "prefix:multiplier pairs, multipliers >= 0"),
    ("width", lambda v: _positive(v) and v <= 1000,
     "a number in (0, 1000] (wider, a layer's size overflows; far less is refused for its memory)"),
    ("dropout", lambda v: v is None or (_non_negative(v) and v < 1), "none or a number in [0, 1)"),
    ("crop", lambda v: v is None or _count(v), f"none or {_COUNT}"),
    ("scale", lambda v: v is None or (len(v) == 2 and _positive(v[0]) and _positive(v[1]) and v[0] <= v[1]),
     "none or low,high with 0 < low <= high"),
    ("optimizer", lambda v: v in ("sgd", "adam"), "sgd or adam"),
    ("schedule", lambda v: v in ("fixed", "step", "poly"), "fixed, step or poly"),
    ("loss", lambda v: v in ("mean", "sum"), "mean or sum"),
    ("pretrained", lambda v: v in (True, False, "caffe"), "caffe, torchvision (true) or none (false)"),
    ("precision", lambda v: v in PRECISIONS, " or ".join(PRECISIONS)),
    ("crf_normalisation", lambda v: v in NORMALISATIONS, " or ".join(NORMALISATIONS)),
    ("crfrnn_lr_multipliers", lambda v: len(v) == 3 and all(_non_negative(m) for m in v),
     "three multipliers >= 0 (spatial, bilateral, compatibility)"),
)
"""(field, test, what it must be) of every recipe field with a range or a set of choices."""


@dataclass(frozen=True)
class Recipe:
    """Everything a run needs besides the method's architecture."""

    method: str
    profile: str
    source: str  # the paper section / solver this recipe follows
    train_split: str
    eval_split: str
    batch_size: int  # total over all processes
    iterations: int
    lr: float
    momentum: float
    weight_decay: float
    optimizer: str = "sgd"  # sgd (the papers) | adam (quick profile: VGG-16 from scratch, no BN)
    schedule: str = "fixed"  # fixed | step | poly
    step_size: int = 0
    gamma: float = 0.1
    poly_power: float = 0.9
    loss: str = "mean"  # mean over valid pixels | sum over pixels
    bias_lr_multiplier: float = 2.0  # Caffe convention; biases also get no weight decay
    lr_multipliers: tuple[tuple[str, float], ...] = ()  # (parameter-name prefix, multiplier)
    crop: int | None = None
    scale: tuple[float, float] | None = None
    flip: bool = False
    loss_on_score_map: bool = False  # loss on labels subsampled to the score map (DeepLab)
    padded_crops: bool = False  # fyu/dilation: the crop of the reflection-padded image is the input; loss on its scores
    pretrained: bool | str = True  # "caffe" (the papers' Caffe init model) | True (torchvision) | False (none)
    width: float = 1.0
    dropout: float | None = None  # None: the paper's dropout; a value replaces p in every dropout layer
    init_from: str | None = None  # a method whose trained weights initialise this one (staged)
    network: str | None = None  # the registered method built; None: ``method`` (a variant names its network)
    extra_train_split: str | None = None  # a second split trained on with train_split (Yu & Koltun Sec 5: coco)
    train_only: str | None = None  # train only parameters under this prefix; the rest frozen
    cached_features: bool = False  # train the head on cached outputs of the frozen part
    # score with the method's published test procedure (``published_probabilities``: fyu/dilation's
    # 900 x 900 tiles, DeepLab's 513 x 513 mean padding and x8 zoom); false: softmax of ``forward``
    # on the whole image (the quick profile, which its records used)
    published_test: bool = True
    # builder arguments of the network beyond width and weights (the paper's basic context module:
    # the identity filler's noise); empty: the builder's defaults
    builder_options: tuple[tuple[str, float], ...] = ()
    # with cached_features: fyu/dilation's protocol (benchmarks/feature_cache.py): each image's 66x66 tile map
    # on disk, labels at stride 8, the head's training form, loss on the map; False: whole-image maps in memory,
    # loss on the scores zoomed to the labels (the quick profile's records)
    tile_features: bool = False
    crf: tuple[tuple[str, float], ...] = tuple((k, float(v)) for k, v in dataclasses.asdict(CRFParams()).items()
                                               if k != "normalisation")
    crf_normalisation: str = "after"  # the dense CRF's kernel normalisation (NORMALISATIONS): the papers' per pixel
    crf_grid: tuple[tuple[str, tuple[float, ...]], ...] = (  # crf-search: DeepLab's coarse grid (SPEC 5)
        ("w1", (5.0, 6.0, 7.0, 8.0, 9.0, 10.0)), ("theta_alpha", (50.0, 60.0, 70.0, 80.0, 90.0, 100.0)),
        ("theta_beta", (3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0)))
    # NAME+crfrnn (benchmarks/crfrnn_stage.py), the cheaper variant: CRF-RNN steps (one image each) on the
    # frozen network, their base lr, and how many training images they cycle through (None: the whole
    # split). Neither Yu & Koltun nor Zheng et al. give a schedule for a CRF-RNN on a frozen network: these
    # are ours; the base lr times Zheng's largest multiplier is the 1e-3 this stage used before them.
    crfrnn_iterations: int = 2000
    crfrnn_lr: float = 1e-7
    crfrnn_images: int | None = None
    # Zheng et al.'s lr multipliers of W_spatial, W_bilateral and the compatibility (torrvision/crfasrnn
    # prototxts: lr_mult 10000, 10000, 1000) and initial CRF (theta_alpha 160, theta_beta 3, theta_gamma 3,
    # spatial weight 3, bilateral weight 5); None: the method's dense-CRF parameters.
    crfrnn_lr_multipliers: tuple[float, float, float] = (10000.0, 10000.0, 1000.0)
    crfrnn_initial: tuple[tuple[str, float], ...] | None = (
        ("w1", 5.0), ("theta_alpha", 160.0), ("theta_beta", 3.0), ("w2", 3.0), ("theta_gamma", 3.0))
    log_every: int = 20
    checkpoint_every: int = 500
    # Arithmetic of training and scoring (benchmarks.distributed.PRECISIONS): the papers trained in float32
    # (Caffe). run --precision tf32|bf16 sets it for a run (then not comparable to the papers).
    precision: str = "fp32"

    def __post_init__(self) -> None:
        # "torchvision" and "none" are stored as True and False, as records before "caffe" existed say them
        spelled = {"torchvision": True, "none": False, "true": True, "false": False}
        if isinstance(self.pretrained, str) and self.pretrained.lower() in spelled:
            object.__setattr__(self, "pretrained", spelled[self.pretrained.lower()])
        problems = [(key, allowed) for key, test, allowed in _RULES if not test(getattr(self, key))]
        if self.schedule == "step" and not _count(self.step_size):
            problems.append(("step_size", f"{_COUNT} with schedule=step"))
        if self.init_from == self.method:
            problems.append(("init_from", f"another method than {self.method} (or none)"))
        if self.padded_crops and (self.crop is None or self.cached_features or self.loss_on_score_map):
            problems.append(("padded_crops", "false unless crop is set and the images are the input (not "
                                             "cached_features, not loss_on_score_map)"))
        if self.tile_features and not self.cached_features:
            problems.append(("tile_features", "false unless cached_features is true"))
        if self.cached_features and self.train_only is None:
            problems.append(("cached_features", "false unless train_only names the part trained on them (the staged "
                                                "context_basic and context_large recipes)"))
        if problems:
            key, allowed = problems[0]
            raise RecipeError(f"recipe {self.method} ({self.profile}): {key}={getattr(self, key)!r} is not allowed; "
                              f"it must be {allowed}")
        try:
            self.crf_params()
            if self.crfrnn_initial is not None:
                CRFParams.from_pairs(self.crfrnn_initial)
        except ValueError as error:
            raise RecipeError(f"recipe {self.method} ({self.profile}): crf: {error}") from None

    def crf_params(self) -> CRFParams:
        """The dense CRF's parameters: ``crf`` with ``crf_normalisation``."""
        return CRFParams.from_pairs((*self.crf, ("normalisation", self.crf_normalisation)))

    @property
    def architecture(self) -> str:
        """The registered method this recipe trains."""
        return self.network or self.method

    @property
    def training_splits(self) -> tuple[str, ...]:
        """``train_split`` and, if any, ``extra_train_split``."""
        return (self.train_split, *([self.extra_train_split] if self.extra_train_split else []))

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


_FCN_SOURCE = "FCN (Long et al. CVPR 2015) Sec 4.3, reference solver: batch 1, fixed lr, momentum 0.99, summed loss"

PAPER_RECIPES = {
    "fcn32s": Recipe("fcn32s", "paper", _FCN_SOURCE, "sbdtrain", "seg11valid", 1, 100_000, 1e-10, 0.99, 5e-4,
                     loss="sum"),
    "fcn16s": Recipe("fcn16s", "paper", _FCN_SOURCE, "sbdtrain", "seg11valid", 1, 100_000, 1e-12, 0.99, 5e-4,
                     loss="sum", init_from="fcn32s"),
    "fcn8s": Recipe("fcn8s", "paper", _FCN_SOURCE, "sbdtrain", "seg11valid", 1, 100_000, 1e-14, 0.99, 5e-4,
                    loss="sum", init_from="fcn16s"),
    "deeplab_v1": Recipe("deeplab_v1", "paper", "DeepLab v1 (Chen et al. ICLR 2015) Sec 4.1: crop 321, batch 20, "
                         "lr 1e-3 (x10 fc8), x0.1 every 2k, 6k iterations, labels subsampled by 8",
                         "trainaug", "val", 20, 6_000, 1e-3, 0.9, 5e-4, schedule="step", step_size=2_000,
                         lr_multipliers=(("fc8", 10.0),), crop=321, flip=True, loss_on_score_map=True),
    "frontend": Recipe("frontend", "paper", "Yu & Koltun (ICLR 2016) Sec 4: batch 14, lr 1e-3, momentum 0.9, "
                       "60k iterations; fyu/dilation train.py: 500x500 crops of the reflection-padded image as "
                       "the input, loss on the 16x16 score map (labels at offset 186, stride 8), mirroring",
                       "trainaug", "val", 14, 60_000, 1e-3, 0.9, 5e-4, crop=500, flip=True, padded_crops=True),
    "context_basic": Recipe("context_basic", "paper", "Yu & Koltun Sec 4: context module trained on front-end "
                            "outputs, batch 60, lr 1e-3, momentum 0.9 (until validation plateaus: 40k here); "
                            "fyu/dilation docs/training.md, test.py --bin, train.py context: the front end's 66x66 "
                            "map of each image's 900x900 tile, labels at stride 8, mirroring, loss on the 66x66 map, "
                            "the training net's per-layer padding (joint fine-tuning: NAME_joint)",
                            "trainaug", "val", 60, 40_000, 1e-3, 0.9, 5e-4, init_from="frontend", flip=True,
                            train_only="context.", cached_features=True, tile_features=True,
                            # fyu/caffe-dilation's identity filler adds N(0, 0.01^2) (filler.hpp, IdentityFiller)
                            builder_options=(("noise_std", 0.01),)),
}
PAPER_RECIPES["context_large"] = dataclasses.replace(PAPER_RECIPES["context_basic"], method="context_large",
                                                     builder_options=())
_COCO = "Yu & Koltun Sec 5 (the front end of Table 3)"
PAPER_RECIPES |= {
    "frontend_coco_stage1": dataclasses.replace(
        PAPER_RECIPES["frontend"], method="frontend_coco_stage1", network="frontend", extra_train_split="coco",
        source=f"{_COCO}, stage 1: VOC trainaug + Microsoft COCO, batch 14, 100k iterations at lr 1e-3, then 40k at "
               "1e-4", iterations=140_000, schedule="step", step_size=100_000),
    "frontend_coco": dataclasses.replace(
        PAPER_RECIPES["frontend"], method="frontend_coco", network="frontend", init_from="frontend_coco_stage1",
        source=f"{_COCO}, stage 2: VOC trainaug only, 50k iterations at lr 1e-5", iterations=50_000, lr=1e-5),
}
_JOINT = ("fyu/dilation docs/training.md, joint training: the staged front end and context module fine-tuned "
          "together on 500x500 crops of the padded image, batch 14, lr 1e-5, momentum 0.9 (the paper does not "
          "describe it and no iteration count is given: 20k here)")
for _name in ("context_basic", "context_large"):
    PAPER_RECIPES[f"{_name}_coco"] = dataclasses.replace(
        PAPER_RECIPES[_name], method=f"{_name}_coco", network=_name, init_from="frontend_coco",
        source=f"{PAPER_RECIPES[_name].source}; on the COCO-pretrained front end ({_COCO}, Table 3)")
    PAPER_RECIPES[f"{_name}_joint"] = dataclasses.replace(
        PAPER_RECIPES["frontend"], method=f"{_name}_joint", network=_name, init_from=_name, source=_JOINT,
        iterations=20_000, lr=1e-5)


def _quick(recipe: Recipe) -> Recipe:
    """The CPU profile: width 1/16, the embedded images whole (the front end: 468 = 2 x 186 + 96
    crops of the padded 96 x 128 images, as the paper recipe crops), a short poly schedule, Adam, no
    dropout, 1,000 steps for the context modules on their cached inputs (400 for the others, 200
    for the staged FCN-16s/8s and joint fine-tuning, and 200 for each of the two COCO front-end
    stages, the VOC-only front end's 400 split in two). The measurements behind each choice: NOTES.md."""
    staged = recipe.init_from is not None and not recipe.cached_features
    iterations = 1000 if recipe.cached_features else 200 if staged or recipe.extra_train_split else 400
    return dataclasses.replace(
        recipe, profile="quick", source=f"quick profile derived from: {recipe.source}"
        + ("; here on whole-image cached maps, loss on the zoomed scores" if recipe.cached_features else ""),
        train_split="trainaug", eval_split="val", batch_size=8, iterations=iterations,
        optimizer="adam", lr=2e-3, momentum=0.9, weight_decay=5e-4, schedule="poly", loss="mean",
        crop=468 if recipe.padded_crops else None, scale=None, tile_features=False,
        flip=True, pretrained=False, width=1 / 16, dropout=0.0, log_every=20, checkpoint_every=100,
        published_test=False, builder_options=(),
        crf=(("w1", 5.0), ("theta_alpha", 20.0), ("theta_beta", 5.0), ("w2", 3.0), ("theta_gamma", 3.0),
             ("iterations", 10.0)),
        crf_grid=(("w1", (3.0, 5.0, 8.0)), ("theta_alpha", (10.0, 20.0, 40.0)), ("theta_beta", (3.0, 5.0, 10.0))),
        crfrnn_iterations=40, crfrnn_lr=1e-2, crfrnn_images=40,
        crfrnn_lr_multipliers=(1.0, 1.0, 1.0), crfrnn_initial=None,  # as before Zheng's: a 96x128 image, 40 steps
    )


PROFILES = {
    "paper": PAPER_RECIPES,
    "quick": {name: _quick(recipe) for name, recipe in PAPER_RECIPES.items()},
}


def recipe_methods() -> list[str]:
    return sorted(PAPER_RECIPES)


MAIN_COMMAND_METHODS = ("fcn32s", "fcn16s", "fcn8s", "deeplab_v1", "frontend_coco", "context_basic_coco",
                        "context_large_coco")
"""What ``run --all`` scores (and trains, with what they start from): every table of SPEC
section 2, with the dilation family trained as Yu & Koltun's Table 3 was (the COCO chain). The
VOC-only ``frontend``/``context_*`` chain and the ``*_joint`` fine-tuning run by name; leaving
them out keeps the main command near 15 minutes on a 2-core CPU."""

CRF_STAGE_METHODS = ("fcn8s", "deeplab_v1", "frontend", "context_basic", "context_large", "frontend_coco",
                     "context_basic_coco", "context_large_coco")
"""Methods the papers also report with dense-CRF post-processing (SPEC section 2): ``NAME+crf``, and
with a CRF-RNN trained on top (Yu & Koltun Table 3; here for all of them): ``NAME+crfrnn``."""

MAIN_COMMAND_CRFRNN = ("frontend_coco", "context_basic_coco", "context_large_coco")
"""The ``+crfrnn`` variants ``run --all`` trains: Table 3's CRF-RNN column (the others run by name)."""


def get_recipe(method: str, profile: str, extra: tuple[Recipe, ...] = ()) -> Recipe:
    """``method``'s recipe in ``profile``; ``extra`` recipes (a new head's) come first."""
    for recipe in extra:
        if (recipe.method, recipe.profile) == (method, profile):
            return recipe
    if profile not in PROFILES:
        raise RecipeError(f"unknown profile {profile!r}; known: {sorted(PROFILES)}")
    recipes = PROFILES[profile]
    if method not in recipes:
        raise RecipeError(f"no recipe for method {method!r}; methods with recipes: {sorted(recipes)} (a new "
                          "method runs with another's recipe through `compare`)")
    return paper_weights(recipes[method]) if profile == "paper" else recipes[method]


def recipe_from_record(recipe: dict[str, object]) -> Recipe:
    """The :class:`Recipe` a record states (JSON lists back to the tuples the dataclass holds)."""
    hints = typing.get_type_hints(Recipe)

    def restore(value: object) -> object:
        return tuple(restore(v) for v in value) if isinstance(value, list) else value

    return Recipe(**{key: restore(value) for key, value in recipe.items() if key in hints})


def paper_weights(recipe: Recipe) -> Recipe:
    """The paper recipe starts from the method's Caffe init model (SPEC section 6) when its file is
    configured (``$SEGREPRO_CAFFE_VGG16`` and the like, ``methods.caffe_weights``), else from
    torchvision's VGG-16, which records and ``check`` then name as not the papers' weights."""
    init = methods.get_entry(recipe.architecture).caffe_init
    path = init.path() if init is not None else None
    return dataclasses.replace(recipe, pretrained="caffe") if path is not None and path.is_file() else recipe


def recipe_for_new_head(method: str, base: Recipe, *, staged: bool = False, head: str | None = None) -> Recipe:
    """The recipe a new head gets from a baseline's (``compare``): the same data, schedule,
    optimiser and number of images seen. ``staged`` keeps the baseline's staging (started from the
    same trained ``init_from`` run; where the baseline trains only its head, possibly on cached
    features, only ``head``, the new method's head prefix, is trained); otherwise end to end."""
    if staged:
        train_only = head if base.train_only is not None else None
        what = f"only {train_only.rstrip('.')} trained" if train_only else "all trained"
        # the tile protocol needs the context networks' tile_features; a new head trains on whole-image features
        return dataclasses.replace(base, method=method, network=None, train_only=train_only, tile_features=False,
                                   builder_options=(),
                                   source=f"the {base.method} recipe ({base.source}), staged like it ({what}), "
                                          f"applied to {method}")
    return dataclasses.replace(base, method=method, network=None, init_from=None, train_only=None,
                               cached_features=False, tile_features=False, builder_options=(),
                               source=f"the {base.method} recipe ({base.source}), applied to {method} end to end")


def _convert(text: str, annotation: object, key: str) -> object:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null", "") and type(None) in args:
            return None
        for kind in (a for a in args if a is not type(None)):  # the first type the text converts to
            try:
                return _convert(text, kind, key)
            except RecipeError:
                continue
        raise RecipeError(f"--set {key}={text}: expected a value of type {annotation}")
    try:
        if annotation is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if annotation in (int, float, str):
            return annotation(text)
        if origin is tuple and args[-1] is Ellipsis:  # tuple of (name, value) pairs: "fc8:10,score:2"
            pairs = [item.split(":") for item in text.split(",") if item]
            return tuple((name, float(value)) for name, value in pairs)
        if origin is tuple:
            return tuple(kind(v) for kind, v in zip(args, text.split(","), strict=True))
    except (ValueError, TypeError):
        pass
    raise RecipeError(f"--set {key}={text}: expected a value of type {annotation}")


def apply_overrides(recipe: Recipe, overrides: list[str]) -> Recipe:
    """``["lr=0.01", "iterations=50"]`` -> a new recipe; unknown keys and bad values are errors."""
    hints = typing.get_type_hints(Recipe)
    changes: dict[str, object] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise RecipeError(f"--set takes key=value, got {item!r}")
        if key not in hints or key in ("method", "profile", "network"):
            known = sorted(set(hints) - {"method", "profile", "network"})
            raise RecipeError(f"--set {key}: unknown recipe key; known: {known}")
        changes[key] = _convert(text, hints[key], key)
    return dataclasses.replace(recipe, **changes)
