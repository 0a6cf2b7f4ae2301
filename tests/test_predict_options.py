"""Inference options of predict: its precision (bf16 where the CPU computes it natively)
and channels-last."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from landslide_lit import module as module_module
from landslide_lit.errors import ConfigError
from landslide_lit.module import LandslideSegmenter

TINY = {
    "encoder_name": "tu-test_resnet",
    "model_kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
    "channel_names": ["vv_before", "vh_before", "vv_after", "vh_after"],
}


def model(**options) -> LandslideSegmenter:
    torch.manual_seed(0)
    return LandslideSegmenter(**TINY, **options).eval()


def batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {"image": torch.randn(2, 4, 64, 96), "origin": torch.zeros(2, 2, dtype=torch.long)}


def probability(network: LandslideSegmenter) -> torch.Tensor:
    with torch.inference_mode():
        return network.predict_step(batch(), 0)["probability"]


def float32_reference() -> torch.Tensor:
    network = model()
    with torch.inference_mode():
        return network(batch()["image"]).float().sigmoid()


def test_an_unknown_predict_precision_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"--model.predict_precision='16-mixed': use one of auto"):
        model(predict_precision="16-mixed")


@pytest.mark.parametrize(("native", "bf16"), [(True, True), (False, False)])
def test_auto_uses_bf16_only_on_a_cpu_that_computes_it_natively(monkeypatch, native, bf16):
    monkeypatch.setattr(module_module, "native_cpu_bf16", lambda: native)
    got = probability(model(predict_channels_last=False))
    assert got.dtype == torch.float32
    expected = float32_reference()
    if bf16:
        assert not torch.equal(got, expected)
        torch.testing.assert_close(got, expected, rtol=0, atol=0.05)
    else:
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_auto_leaves_a_mixed_trainer_precision_alone(monkeypatch):
    monkeypatch.setattr(module_module, "native_cpu_bf16", lambda: True)
    network = model()
    network.trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False)
    with network.predict_autocast():
        assert not torch.is_autocast_enabled("cpu")  # nothing added: the trainer's own applies


def test_32_true_is_float32_even_under_a_bf16_autocast():
    network = model(predict_precision="32-true", predict_channels_last=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = probability(network)
    torch.testing.assert_close(got, float32_reference(), rtol=0, atol=0)


def test_bf16_mixed_is_bf16_whatever_the_cpu(monkeypatch):
    monkeypatch.setattr(module_module, "native_cpu_bf16", lambda: False)
    got = probability(model(predict_precision="bf16-mixed"))
    assert not torch.equal(got, float32_reference())
    torch.testing.assert_close(got, float32_reference(), rtol=0, atol=0.05)


def test_channels_last_gives_the_same_map_to_float_rounding():
    network = model(predict_precision="32-true")
    got = probability(network)
    conv = next(m for m in network.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, float32_reference(), rtol=1e-5, atol=1e-6)
    network.hparams.predict_channels_last = False  # and back
    probability(network)
    assert conv.weight.is_contiguous()
