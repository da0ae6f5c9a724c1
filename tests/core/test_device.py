"""deepclust.core.device: CPU bf16 detection, `amp: auto` per backbone, channels_last conv nets."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from deepclust.core import device as dev
from deepclust.models.backbones import build_backbone


def test_auto_amp_on_cpu_follows_the_measured_backbone_table_and_size(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(dev, "CPU_BF16_BACKBONES", ("vit",))
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: True)
    size = dev.CPU_BF16_MIN_SIZE
    assert dev.amp_dtype("auto", cpu, "vit_tiny", size) == torch.bfloat16
    assert dev.amp_dtype("auto", cpu, "vit_tiny", size - 1) is None        # small images: float32
    assert dev.amp_dtype("auto", cpu, "vit_tiny") is None                  # size unknown: float32
    assert dev.amp_dtype("auto", cpu, "small_cnn", size) is None and dev.amp_dtype("auto", cpu) is None
    assert dev.amp_dtype("off", cpu, "vit_tiny", size) is None and dev.amp_dtype("bf16", cpu) == torch.bfloat16
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: False)      # no bf16 instructions: float32
    assert dev.amp_dtype("auto", cpu, "vit_tiny", size) is None


def test_cpu_flags_are_read_once_and_bf16_is_one_of_them():
    assert dev.cpu_flags() is dev.cpu_flags()
    assert dev.cpu_has_bf16() == bool({"amx_bf16", "avx512_bf16"} & dev.cpu_flags())


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_channels_last_gives_the_same_network_in_the_faster_layout(name):
    torch.manual_seed(0)
    trunk = build_backbone(name, in_chans=3, img_size=16)
    holder = nn.ModuleDict({"student": trunk, "teacher": copy.deepcopy(trunk), "head": nn.Linear(4, 2)})
    reference = copy.deepcopy(holder)
    assert dev.use_channels_last(holder)
    convs = [m for m in holder.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert holder["student"].channels_last and holder["teacher"].channels_last
    x = torch.randn(4, 3, 16, 16)
    holder.eval(), reference.eval()
    torch.testing.assert_close(holder["student"](x), reference["student"](x), rtol=1e-4, atol=1e-5)
    assert not dev.use_channels_last(nn.Linear(3, 3))            # nothing to convert
