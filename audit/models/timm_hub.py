"""The Hugging Face Hub files of timm's pretrained weights: where the local cache is, which
files of a repo timm loads, finding them in the cache, and the download (only with
``model.allow_download``).

:mod:`audit.models.timm` takes a tag's ``default`` weights from here. ``huggingface_hub`` (a
dependency of timm) is imported when a function needs it, so this module imports without it.
"""

from __future__ import annotations

import os
from typing import Any

from audit.models.weights import one_line

HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")
"""The files of a Hugging Face repo timm loads when the config names none, in its order."""


def hf_hub_cache() -> str:
    """The Hugging Face hub cache folder as ``huggingface_hub`` resolves it (``HF_HUB_CACHE``,
    the legacy ``HUGGINGFACE_HUB_CACHE``, ``HF_HOME/hub``, ``XDG_CACHE_HOME/huggingface/hub``,
    ``~/.cache/huggingface/hub``), read from the environment now rather than at import."""
    home = os.path.expandvars(
        os.path.expanduser(
            os.getenv(
                "HF_HOME",
                os.path.join(
                    os.getenv("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")),
                    "huggingface",
                ),
            )
        )
    )
    hub = os.getenv("HF_HUB_CACHE", os.getenv("HUGGINGFACE_HUB_CACHE", os.path.join(home, "hub")))
    return os.path.expandvars(os.path.expanduser(hub))


def hf_filenames(cfg: Any) -> tuple[str, ...]:
    """The files of the pretrained config's Hub repo to look for, in timm's order: its
    ``hf_hub_filename`` (a ``.bin`` one after its safetensors alternative), else
    :data:`HF_FILENAMES`."""
    name = getattr(cfg, "hf_hub_filename", None)
    if not name:
        return HF_FILENAMES
    if name == "pytorch_model.bin":
        return HF_FILENAMES
    if name == "open_clip_pytorch_model.bin":
        return "open_clip_model.safetensors", name
    if name.endswith(".bin"):
        return name[: -len(".bin")] + ".safetensors", name
    return (name,)


def split_hub_id(hub_id: str) -> tuple[str, str | None]:
    """``org/repo@revision`` -> (``org/repo``, ``revision``), as timm's ``hf_split``."""
    repo, _, revision = hub_id.partition("@")
    return repo, revision or None


def cached_weights(cfg: Any) -> tuple[str, str, str] | None:
    """``(repo_id, filename, path)`` of the pretrained config's weights in the local Hugging
    Face cache (:func:`hf_hub_cache`), the first of :func:`hf_filenames` found; None when none
    is cached. No network.
    """
    from huggingface_hub import try_to_load_from_cache

    repo, revision = split_hub_id(cfg.hf_hub_id)
    cache = hf_hub_cache()
    for filename in hf_filenames(cfg):
        found = try_to_load_from_cache(
            repo_id=repo, filename=filename, cache_dir=cache, revision=revision
        )
        if isinstance(found, str) and os.path.isfile(found):
            return repo, filename, found
    return None


def download(cfg: Any, name: str) -> tuple[str, str, str]:
    """Fetch the pretrained config's weights into the Hugging Face cache (only with
    ``model.allow_download``): the first of :func:`hf_filenames` the repo has.

    Raises:
        RuntimeError: the download failed.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    repo, revision = split_hub_id(cfg.hf_hub_id)
    cache = hf_hub_cache()
    names = hf_filenames(cfg)
    for filename in names:
        try:
            path = hf_hub_download(
                repo_id=repo, filename=filename, revision=revision, cache_dir=cache
            )
        except LocalEntryNotFoundError as exc:  # offline (HF_HUB_OFFLINE) or unreachable
            raise RuntimeError(
                f"Downloading {filename} of Hugging Face repo {repo!r} for {name!r} failed: "
                f"{one_line(exc)}"
            ) from exc
        except EntryNotFoundError:  # the repo has no such file: try the next name
            continue
        except Exception as exc:
            raise RuntimeError(
                f"Downloading {filename} of Hugging Face repo {repo!r} for {name!r} failed: "
                f"{type(exc).__name__}: {one_line(exc)}"
            ) from exc
        return repo, filename, str(path)
    raise RuntimeError(f"Hugging Face repo {repo!r} for {name!r} has none of {', '.join(names)}.")


__all__ = [
    "HF_FILENAMES",
    "cached_weights",
    "download",
    "hf_filenames",
    "hf_hub_cache",
    "split_hub_id",
]
