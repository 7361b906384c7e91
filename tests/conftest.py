import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"

torch.set_num_threads(2)

# Score strides of SPEC section 2, stated independently of the code.
SPEC_SCORE_STRIDE = {"fcn32s": 32, "fcn16s": 16, "fcn8s": 8, "deeplab_v1": 8, "frontend": 8,
                     "context_basic": 8, "context_large": 8}
# the curated mmsegmentation heads (issue 16) keep the stride of the front end's fc7, which they read
SPEC_SCORE_STRIDE |= {f"mmseg_{head}": 8 for head in ("fcn", "aspp", "dsaspp", "psp", "da", "nl", "gc", "ema", "isa",
                                                       "apc", "dm")}


@pytest.fixture(autouse=True)
def _registry_restored():
    """Methods a test registers (directly or through ``--import MODULE``) end with it: the registry
    is restored and the modules that registered them are forgotten, so a later ``--import`` of the
    same module registers its methods again."""
    from methods import registry

    before = dict(registry._REGISTRY)
    yield
    added = {entry.builder.__module__ for name, entry in registry._REGISTRY.items() if name not in before}
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)
    for module in added:
        sys.modules.pop(module, None)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: the tests need ../shared beside the checkout")
    return SHARED


@pytest.fixture
def small_voc(shared_dir):
    """``small_voc(folder, train=3, val=3, extra_val=())``: a VOC tree of genuine samples (images of
    different sizes) with train, trainaug (= train) and val lists; ``extra_val`` ids are appended to
    val (e.g. training ids, to make the splits overlap). Returns ``folder``."""
    import shutil

    source = shared_dir / "data" / "voc-real-mini" / "VOCdevkit" / "VOC2012"
    lists = source / "ImageSets" / "Segmentation"

    def make(folder: Path, train: int = 3, val: int = 3, extra_val: tuple[str, ...] = ()) -> Path:
        train_ids = (lists / "train.txt").read_text().split()[:train]
        val_ids = [*(lists / "val.txt").read_text().split()[:val], *extra_val]
        voc = folder / "VOCdevkit" / "VOC2012"
        for sub in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ImageSets/Segmentation"):
            (voc / sub).mkdir(parents=True, exist_ok=True)
        for image_id in {*train_ids, *val_ids}:
            shutil.copy(source / "JPEGImages" / f"{image_id}.jpg", voc / "JPEGImages")
            for labels in ("SegmentationClass", "SegmentationClassAug"):
                shutil.copy(source / "SegmentationClass" / f"{image_id}.png", voc / labels)
        for name, ids in (("train", train_ids), ("trainaug", train_ids), ("val", val_ids)):
            (voc / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
        return folder

    return make
