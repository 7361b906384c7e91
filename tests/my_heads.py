"""The README's "Adding your own method" example, verbatim: the head `compare` is tested with."""

from torch import nn

import methods
from methods.common import CaffeInterp, SegmentationModel


class MyHead(SegmentationModel):
    score_stride = 8
    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 64, 3, stride=8, padding=1), nn.ReLU(), nn.Conv2d(64, num_classes, 1))
        self.final_upsample = CaffeInterp()
    def score_map(self, x):
        return self.body(x)

methods.register("my_head", paper="Me et al. 2026")(lambda num_classes=21, **kw: MyHead(num_classes))
