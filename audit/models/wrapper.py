"""The model as the stages see it: ``[0, 1]`` images in, logits (and an embedding) out.

:class:`AuditModel` wraps any classifier ``nn.Module``: it normalises inside (the model's own
mean/std, from its :class:`~audit.models.transform.EvalTransform`) and takes the embedding the
way the model's source says (:class:`Embedding`):

* ``head_input``: the flattened input of a layer, by default the last ``nn.Linear`` in module
  order (torchvision classifiers, the demo model), so ``logits == embedding @ W.T + b``;
* ``layer_output``: the flattened output of a named layer (``model.embedding_layer``);
* ``timm``: timm's own API, ``forward_head(forward_features(x), pre_logits=True)``, with the
  logits from ``forward_head`` on the same features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

EMBEDDING_KINDS = ("head_input", "layer_output", "timm")


@dataclass(frozen=True)
class Embedding:
    """How to take a model's embedding.

    Attributes:
        kind: One of :data:`EMBEDDING_KINDS`.
        layer: The qualified module name for ``head_input`` / ``layer_output`` (empty for
            ``timm``).
    """

    kind: str = "head_input"
    layer: str = ""

    def describe(self) -> str:
        if self.kind == "timm":
            return "timm forward_head(pre_logits=True)"
        return f"{'input' if self.kind == 'head_input' else 'output'} of {self.layer}"


def find_classifier_layer(net: nn.Module) -> tuple[str, nn.Linear]:
    """The last ``nn.Linear`` of ``net`` in module order and its qualified name.

    Raises:
        ValueError: ``net`` has no ``nn.Linear`` layer.
    """
    found = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ValueError(
            f"{type(net).__name__} has no nn.Linear layer, so its embedding cannot be captured; "
            "name a layer with model.embedding_layer"
        )
    return found[-1]


def default_embedding(net: nn.Module) -> Embedding:
    """The input of the last ``nn.Linear`` of ``net``.

    Raises:
        ValueError: ``net`` has no ``nn.Linear`` layer.
    """
    return Embedding("head_input", find_classifier_layer(net)[0])


class AuditModel(nn.Module):
    """Wraps a classifier: takes float ``(n, 3, H, W)`` in ``[0, 1]``, normalises by mean/std
    inside, returns logits ``(n, C)``.

    Args:
        net: The classifier, taking normalised ``(n, 3, H, W)`` input and returning logits.
        mean: Per-channel mean subtracted from the ``[0, 1]`` input.
        std: Per-channel standard deviation the input is divided by.
        embedding: How to take the embedding; None means the input of the last ``nn.Linear``.

    Attributes:
        net: The wrapped classifier.
        embedding: The :class:`Embedding` in use.
        head_name: The layer the embedding is taken at (empty for ``timm``).

    Raises:
        ValueError: mean/std are not 3 values (std > 0), the named layer does not exist, or
            (with ``embedding`` None) ``net`` has no ``nn.Linear``.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        embedding: Embedding | None = None,
    ) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError(
                f"mean and std must be 3 values each, std > 0. Got mean={tuple(mean)}, "
                f"std={tuple(std)} instead."
            )
        self.net = net
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.embedding = embedding or default_embedding(net)
        if self.embedding.kind not in EMBEDDING_KINDS:
            raise ValueError(f"unknown embedding kind {self.embedding.kind!r}")
        self.head_name = self.embedding.layer
        self._capturing = False
        self._embedding: Tensor | None = None
        if self.embedding.kind == "timm":
            for attr in ("forward_features", "forward_head"):
                if not callable(getattr(net, attr, None)):
                    raise ValueError(
                        f"{type(net).__name__} has no {attr}(); it is not a timm model"
                    )
        else:
            try:
                layer = net.get_submodule(self.embedding.layer)
            except AttributeError:
                raise ValueError(
                    f"{type(net).__name__} has no layer named {self.embedding.layer!r}"
                ) from None
            if self.embedding.kind == "head_input":
                layer.register_forward_pre_hook(self._capture_input)
            else:
                layer.register_forward_hook(self._capture_output)

    def _capture_input(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self._capturing:
            self._embedding = args[0].flatten(1)

    def _capture_output(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self._capturing:
            self._embedding = output.flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits.

        Args:
            x: ``(n, 3, H, W) float`` in ``[0, 1]``, at the model's crop size.

        Returns:
            ``(n, C) float`` logits.

        Raises:
            ValueError: ``x`` is not ``(n, 3, H, W)``.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"input must be (n, 3, H, W). Got shape {tuple(x.shape)} instead.")
        out: Tensor = self.net(self.normalise(x))
        return out

    def normalise(self, x: Tensor) -> Tensor:
        """``(x - mean) / std`` per channel: what :meth:`forward` hands to ``net``.

        Every element is computed on its own (one correctly rounded subtraction and division),
        so normalising an image once and assembling a batch from it gives the same bits as
        normalising the assembled batch; LIME relies on that to skip this step per batch.

        Args:
            x: ``(..., 3, H, W) float`` in ``[0, 1]``.

        Returns:
            A new tensor of ``x``'s shape and dtype.
        """
        mean, std = self.mean.to(x.dtype), self.std.to(x.dtype)
        if x.ndim == 3:
            mean, std = mean[0], std[0]
        return (x - mean) / std

    def forward_with_embedding(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and the embedding of the same forward pass.

        Args:
            x: ``(n, 3, H, W) float`` in ``[0, 1]``.

        Returns:
            ``(logits, embedding)``: ``(n, C)`` and ``(n, D)``.
        """
        if self.embedding.kind == "timm":
            if x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(f"input must be (n, 3, H, W). Got shape {tuple(x.shape)} instead.")
            net: Any = self.net
            features = net.forward_features(self.normalise(x))
            embedding: Tensor = net.forward_head(features, pre_logits=True).flatten(1)
            logits: Tensor = net.forward_head(features)
            return logits, embedding
        self._embedding = None
        self._capturing = True
        try:
            logits = self.forward(x)
        finally:
            self._capturing = False
        captured, self._embedding = self._embedding, None
        if captured is None:
            raise RuntimeError(f"the layer {self.head_name!r} was not called in forward")
        return logits, captured
