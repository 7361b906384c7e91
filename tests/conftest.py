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


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: the tests need ../shared beside the checkout")
    return SHARED
