"""``demo_digits``: a small ConvNet for the embedded digits demo, cheap enough for any CPU.

It takes the same ``(n, 3, 224, 224)`` evaluation crop as an ImageNet model (normalised with mean
and std 0.5 by :class:`audit.models.AuditModel`) and first averages it down to 28x28 (an 8x8
digit needs no more), so all of its work happens at 28x28 and below. A parameter-free instance
normalisation then removes each picture's colours and contrast (the demo digits come in random
colours; it also makes the 0.5 mean/std immaterial), three conv blocks with batch norm follow, and
global average pooling gives a 64-d embedding for the final ``fc`` layer. About 57k parameters;
``scripts/train_demo_model.py`` trains the shipped weights.
"""

from __future__ import annotations

from torch import Tensor, nn

DEMO_MEAN = (0.5, 0.5, 0.5)
DEMO_STD = (0.5, 0.5, 0.5)
EMBEDDING_DIM = 64


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class DemoDigitsNet(nn.Module):
    """The ``demo_digits`` classifier.

    Args:
        num_classes: Number of outputs.

    Example:
        >>> import torch
        >>> net = DemoDigitsNet(10).eval()
        >>> net(torch.zeros(2, 3, 224, 224)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        # Parameter-free: (n, 3, 224, 224) -> (n, 3, 28, 28), per-image, per-channel standardised.
        self.stem = nn.Sequential(nn.AvgPool2d(8), nn.InstanceNorm2d(3, affine=False))
        self.features = nn.Sequential(
            _block(3, 32),
            nn.MaxPool2d(2),  # 14x14
            _block(32, 64),
            nn.MaxPool2d(2),  # 7x7
            _block(64, EMBEDDING_DIM),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(EMBEDDING_DIM, num_classes)

    def forward_from_stem(self, x: Tensor) -> Tensor:
        """Logits from stem output.

        Args:
            x: ``(n, 3, 28, 28) float``, the output of ``self.stem`` (training computes it once).

        Returns:
            ``(n, num_classes) float`` logits.
        """
        return self.fc(self.features(x))

    def forward(self, x: Tensor) -> Tensor:
        """Logits.

        Args:
            x: ``(n, 3, H, W) float``, normalised; H and W at least 32 (224 in the demo).

        Returns:
            ``(n, num_classes) float`` logits.
        """
        return self.forward_from_stem(self.stem(x))
