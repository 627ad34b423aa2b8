"""Reading weights: state-dict files by path or fsspec URL, their sha256, one-line errors.

A run records the sha256 of the weights it loaded (:attr:`Weights.sha256`): of the file's bytes
when a file was read (the torchvision cache, a timm/Hugging Face cache file, a user's
checkpoint, the shipped demo weights), else of the state dict itself (:func:`state_digest`:
random initialisation, a factory's own weights). A resumed run compares it, so a checkpoint
replaced at the same path is refused and the same file found under another ``TORCH_HOME`` is
accepted.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import fsspec
import torch
from torch import Tensor, nn

from audit.config import ConfigError

_MAX_DETAIL = 300  # characters of a state-dict mismatch kept in the one-line error


@dataclass(frozen=True)
class Weights:
    """What a model was loaded with.

    Attributes:
        description: For people, e.g. ``torchvision ResNet18_Weights.IMAGENET1K_V1 (<path>)``,
            ``random (seed=0)`` or the state dict's path.
        sha256: Hex digest of the file's bytes, or of the state dict (see :func:`state_digest`).
        digest_of: ``file`` or ``state_dict``: what ``sha256`` was computed over.
    """

    description: str
    sha256: str
    digest_of: str = "file"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def state_digest(net: nn.Module) -> str:
    """sha256 over a module's state dict: every entry's name, dtype, shape and bytes, in order."""
    h = hashlib.sha256()
    for key, value in net.state_dict().items():
        t = value.detach().cpu().contiguous()
        h.update(f"{key}\t{t.dtype}\t{tuple(t.shape)}\n".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def one_line(exc: BaseException) -> str:
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


def check_weights_file(uri: str, field: str = "model.weights") -> None:
    """The file exists (nothing is read).

    Raises:
        ConfigError: it does not, or cannot be checked.
    """
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        exists = fs.isfile(path)
    except Exception as exc:  # unknown protocol, missing fsspec backend, network error
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(
            f"The '{field}' field must be 'default', 'random' or a readable state-dict "
            f"file. Got {uri!r}, which cannot be checked: {type(exc).__name__}: {first}"
        ) from None
    if not exists:
        raise ConfigError(
            f"The '{field}' field must be 'default', 'random' or an existing state-dict "
            f"file. Got {uri!r}, which does not exist."
        )


def read_uri(uri: str, field: str = "model.weights") -> bytes:
    """A file's bytes through fsspec.

    Raises:
        ConfigError: it cannot be read (one line).
    """
    try:
        with fsspec.open(uri, "rb") as f:
            data: bytes = f.read()
    except Exception as exc:
        raise ConfigError(
            f"The '{field}' file {uri!r} cannot be read: {type(exc).__name__}: {one_line(exc)}"
        ) from None
    return data


def as_state_dict(obj: object, source: str) -> dict[str, Tensor]:
    """Accept a state dict, or a checkpoint holding one under ``state_dict``/``model``; drop a
    ``module.`` prefix left by DataParallel.

    Raises:
        ConfigError: ``obj`` holds no state dict.
    """
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and all(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    ):
        raise ConfigError(
            f"The 'model.weights' file {source!r} must hold a state dict (names -> tensors). "
            f"Got {type(obj).__name__} instead."
        )
    # Keep the object (and the ``_metadata`` versions some layers read) unless renaming.
    state: dict[str, Tensor] = obj if isinstance(obj, dict) else dict(obj)
    prefix = "module."
    if all(k.startswith(prefix) for k in state):
        renamed: dict[str, Tensor] = OrderedDict((k[len(prefix) :], v) for k, v in state.items())
        metadata = getattr(state, "_metadata", None)
        if isinstance(metadata, dict):
            renamed._metadata = {  # type: ignore[attr-defined]
                k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in metadata.items()
            }
        state = renamed
    return state


def load_state_bytes(data: bytes, source: str) -> dict[str, Tensor]:
    """A state dict from a file's bytes: safetensors when the bytes are one (timm's and Hugging
    Face's format), else ``torch.load(weights_only=True)``.

    Raises:
        ConfigError: neither reads, or what is read holds no state dict (one line).
    """
    if _looks_like_safetensors(data):
        try:
            from safetensors.torch import load as load_safetensors

            return as_state_dict(load_safetensors(data), source)
        except ImportError:
            pass  # not installed: torch.load says what is wrong
        except Exception as exc:
            raise ConfigError(
                f"The 'model.weights' file {source!r} cannot be read as safetensors: "
                f"{one_line(exc)}"
            ) from None
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"The 'model.weights' file {source!r} cannot be read as a state dict with "
            f"weights_only=True: {one_line(exc)}"
        ) from None
    return as_state_dict(obj, source)


def _looks_like_safetensors(data: bytes) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON header ``{...``."""
    if len(data) < 10:
        return False
    n = int.from_bytes(data[:8], "little")
    return 0 < n <= len(data) - 8 and data[8:9] == b"{"


_SIZE_MISMATCH = re.compile(
    r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[.*?\])\) from "
    r"checkpoint, the shape in current model is torch\.Size\((\[.*?\])\)"
)


def summarise_load_error(exc: BaseException) -> str:
    """Condense ``load_state_dict``'s multi-line error into counts and a few examples."""
    text = str(exc)
    parts: list[str] = []
    for line in (raw.strip() for raw in text.splitlines()):
        for label, what in (("Missing key(s)", "missing"), ("Unexpected key(s)", "unexpected")):
            if line.startswith(label):
                keys = re.findall(r'"([^"]+)"', line)
                more = ", ..." if len(keys) > 3 else ""
                parts.append(f"{len(keys)} {what} keys ({', '.join(keys[:3])}{more})")
    sizes = _SIZE_MISMATCH.findall(text)
    if sizes:
        key, got, want = sizes[0]
        more = ", ..." if len(sizes) > 1 else ""
        parts.append(f"{len(sizes)} shape mismatches ({key}: file {got} vs model {want}{more})")
    return one_line(ValueError("; ".join(parts))) if parts else one_line(exc)


def mismatch(name: str, source: str, exc: BaseException) -> ConfigError:
    return ConfigError(
        f"The 'model.weights' state dict {source!r} does not fit model {name!r}: "
        f"{summarise_load_error(exc)}."
    )


def load_into(net: nn.Module, state: Mapping[str, Tensor], name: str, source: str) -> None:
    """``net.load_state_dict(state)`` (strict) with a one-line error.

    Raises:
        ConfigError: the state dict does not fit.
    """
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise mismatch(name, source, exc) from None


def seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build with the global torch RNG seeded, leaving the caller's RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
