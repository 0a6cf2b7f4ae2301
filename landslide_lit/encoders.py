"""Encoder weights: checks of smp/timm names, of the hub's reachability, and local files.

Pretrained weights come from the Hugging Face hub (smp's own encoders) or from a local
state-dict file; every failure becomes one :class:`EncoderWeightsError` that says how to
proceed (train from scratch, or make the file on a machine with network).
"""

from __future__ import annotations

import difflib
import os
import socket
from pathlib import Path

import segmentation_models_pytorch as smp
import timm
import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from safetensors.torch import load_file
from torch import nn

from landslide_lit.errors import ConfigError, LandslideLitError

__all__ = [
    "EncoderWeightsError",
    "check_model_names",
    "check_weights_reachable",
    "download_help",
    "is_file_name",
    "load_encoder_weights",
]


class EncoderWeightsError(LandslideLitError, RuntimeError):
    """Encoder weights could not be downloaded or read from a local file."""


# Proxy variables the hub client honours: a direct connection test says nothing then.
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
_HUB_TIMEOUT_S = 10


def check_model_names(arch: str, encoder_name: str, weights: str | None) -> None:
    """One clear error for an architecture, encoder or weights name smp does not know."""
    archs = [a.__name__ for a in smp.MODEL_ARCHITECTURES_MAPPING.values()]
    if arch.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
        raise ConfigError(_unknown_name("--model.arch", arch, archs))
    if encoder_name.startswith("tu-"):
        if not timm.is_model(encoder_name[3:].split(".")[0]):
            raise ConfigError(
                _unknown_name(
                    "--model.encoder_name",
                    encoder_name,
                    [f"tu-{m}" for m in timm.list_models()],
                    "tu-<timm model name>",
                )
            )
        return
    encoders = smp.encoders.encoders
    if encoder_name not in encoders:
        raise ConfigError(_unknown_name("--model.encoder_name", encoder_name, list(encoders)))
    known = list(encoders[encoder_name]["pretrained_settings"])
    if weights is not None and not is_file_name(weights) and weights not in known:
        raise ConfigError(
            _unknown_name(
                "--model.encoder_weights", weights, known, f"null, a file path or {known}"
            )
        )


def _unknown_name(option: str, value: str, known: list[str], choices: str = "") -> str:
    """``option VALUE is unknown; did you mean ...?`` with the closest known names."""
    close = difflib.get_close_matches(value, known, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    listed = choices or (", ".join(known) if len(known) <= 20 else f"{len(known)} names")
    return f"{option} {value!r} is unknown{hint} Choose from {listed}."


def check_weights_reachable(encoder_name: str, weights: str) -> None:
    """Raise ``OSError`` at once when smp's pretrained weights are neither cached nor reachable.

    Without network the hub client retries for about half a minute before it gives up;
    one connection attempt says the same in milliseconds (or ``_HUB_TIMEOUT_S``).
    """
    settings = smp.encoders.encoders.get(encoder_name, {}).get("pretrained_settings", {})
    if weights not in settings:
        return  # timm encoders fetch their own weights
    repo, revision = settings[weights]["repo_id"], settings[weights]["revision"]
    files = ("config.json", "model.safetensors")
    if all(isinstance(try_to_load_from_cache(repo, f, revision=revision), str) for f in files):
        return
    if hub_constants.HF_HUB_OFFLINE:
        raise OSError(f"HF_HUB_OFFLINE is set and {repo} is not in the Hugging Face cache")
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return
    host = hub_constants.ENDPOINT.split("://")[-1].split("/")[0].split(":")[0]
    try:
        socket.create_connection((host, 443), timeout=_HUB_TIMEOUT_S).close()
    except OSError as error:
        raise OSError(f"cannot reach {host}: {error}") from error


def is_file_name(weights: str) -> bool:
    """Whether ``encoder_weights`` names a local file rather than smp weights (``imagenet``)."""
    path = Path(weights)
    return bool(path.suffix) or len(path.parts) > 1


def load_encoder_weights(encoder: nn.Module, path: Path, in_channels: int) -> None:
    """Load a 3-channel encoder state dict from ``path`` and adapt it to ``in_channels``.

    The file holds an smp encoder's ``state_dict()`` (``torch.save`` or ``.safetensors``,
    as smp's hub files) or a torchvision ResNet's, whose ``fc.*`` classifier is dropped.
    The first convolution is then widened the way smp adapts its pretrained weights.
    """
    if not hasattr(encoder, "set_in_channels"):
        raise EncoderWeightsError(
            f"Loading encoder weights from a file needs one of smp's own encoders, "
            f"not {type(encoder).__name__}; {path} was not loaded."
        )
    if not path.is_file():
        raise EncoderWeightsError(
            f"encoder weights file {path} (--model.encoder_weights) does not exist. Give the "
            "path of an encoder state dict, or train from scratch with "
            "--model.encoder_weights null."
        )
    try:
        if path.suffix == ".safetensors":
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file: say which one
        raise EncoderWeightsError(f"Could not read encoder weights from {path}: {error}") from error
    expected = encoder.state_dict().keys()
    state = {k: v for k, v in state.items() if k in expected or not k.startswith("fc.")}
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise EncoderWeightsError(
            f"{path} does not fit encoder {type(encoder).__name__}: "
            f"{len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]}."
        )
    try:
        encoder.load_state_dict(state)
    except RuntimeError as error:
        raise EncoderWeightsError(f"{path} does not fit the encoder: {error}") from error
    encoder.set_in_channels(in_channels, pretrained=True)


def download_help(encoder_name: str, weights: str, reason: str) -> str:
    """How to proceed when pretrained encoder weights cannot be downloaded."""
    return (
        f"Could not download {weights!r} weights for encoder "
        f"{encoder_name!r} ({reason.splitlines()[0]}).\n"
        "Train from scratch with --model.encoder_weights null, or load a local file with "
        "--model.encoder_weights /path/to/encoder.pth. Make that file on a machine with "
        'network:\n  python -c "import torch, segmentation_models_pytorch as smp; '
        f"torch.save(smp.encoders.get_encoder('{encoder_name}', "
        f"weights='{weights}').state_dict(), 'encoder.pth')\"\n"
        "(for smp's own encoders; a torchvision ResNet state dict works too). When loading "
        "a checkpoint, pass "
        "--model.encoder_weights null: the checkpoint holds the weights."
    )
