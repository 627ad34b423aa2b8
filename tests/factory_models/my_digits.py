"""A user's own model for ``model.factory: "my_digits:build"`` (not registered anywhere).

It wraps the demo's ConvNet with the weights the package ships, so it is as accurate as
``demo_digits``; the audit knows it only through this file and ``digit_names.txt``. It expects
inputs normalised with mean and std 0.5 (``model.preprocess.mean`` / ``std``).
"""

from __future__ import annotations

import io
from importlib import resources

import torch
from torch import Tensor, nn

from audit.models.demo_net import DemoDigitsNet


class MyDigits(nn.Module):
    """A digit classifier of the user's own: ``(n, 3, H, W)`` normalised in, 10 logits out."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = DemoDigitsNet(10)
        data = resources.files("audit").joinpath("weights", "demo_digits.pt").read_bytes()
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        self.backbone.load_state_dict(state)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.backbone(x)
        return out


def build() -> nn.Module:
    """The factory ``model.factory: my_digits:build`` names."""
    return MyDigits()
