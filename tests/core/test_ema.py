"""EMA of weights and buffers (the loop applies it to a method's declared teacher pairs)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepclust.core.ema import ema_update_


def test_ema_update():
    torch.manual_seed(0)
    student, teacher = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    student.weight.data.normal_()
    student.running_mean.normal_()
    student.num_batches_tracked += 7
    t0 = teacher.weight.detach().clone()
    ema_update_(teacher, student, momentum=0.9)
    torch.testing.assert_close(teacher.weight.detach(), 0.9 * t0 + 0.1 * student.weight.detach())
    torch.testing.assert_close(teacher.running_mean, 0.1 * student.running_mean)
    assert int(teacher.num_batches_tracked) == 7
    with pytest.raises(ValueError, match="differ"):
        ema_update_(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)), 0.9)
