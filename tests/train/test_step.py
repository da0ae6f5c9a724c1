"""One optimisation step: per-parameter clipping (DINO's utils.clip_gradients) before the
last-layer cancel, EMA of declared pairs, the per-step schedule values, weighted terms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepclust.core.schedules import cosine_schedule
from deepclust.methods.base import Method, StepOutput, StepState, TeacherSchedule
from deepclust.train.step import Schedules, clip_gradients_, forget_optimizer_state, optimizer_step

torch.set_num_threads(1)


def _reference_clip(grads: list[torch.Tensor], clip: float) -> list[torch.Tensor]:
    """DINO utils.clip_gradients, one parameter at a time."""
    out = []
    for g in grads:
        param_norm = g.norm(2)
        clip_coef = clip / (param_norm + 1e-6)
        out.append(g * clip_coef if clip_coef < 1 else g.clone())
    return out


def test_clip_gradients_is_per_parameter_as_in_dino():
    g = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.zeros(5, 3)), nn.Parameter(torch.zeros(7)), nn.Parameter(torch.zeros(2))]
    grads = [torch.randn(5, 3, generator=g) * 10, torch.randn(7, generator=g) * 0.01, torch.randn(2, generator=g)]
    for p, gr in zip(params, grads):
        p.grad = gr.clone()
    clip_gradients_(params, 1.0)
    for p, want in zip(params, _reference_clip(grads, 1.0)):
        torch.testing.assert_close(p.grad, want)
    assert params[0].grad.norm() == pytest.approx(1.0, rel=1e-5)      # clipped
    torch.testing.assert_close(params[1].grad, grads[1])             # small: untouched


class _TwoLayer(Method):
    name = "two_layer"

    def __init__(self):
        super().__init__(nn.Identity())
        self.body = nn.Linear(3, 3, bias=False)
        self.last = nn.Linear(3, 3, bias=False)
        self.teacher = nn.Linear(3, 3, bias=False)

    def last_layer_parameters(self):
        return list(self.last.parameters())

    def ema_pairs(self):
        return [(self.teacher, self.body)]


def test_clip_then_cancel_the_frozen_last_layer_then_step_then_ema():
    """The last layer's (huge) gradient does not change the body's clip factor (it would with
    a global-norm clip), the last layer does not move while frozen, and the teacher is the EMA
    of the updated body with the scheduled momentum."""
    torch.manual_seed(0)
    m = _TwoLayer()
    x = torch.randn(4, 3)
    loss = (m.last(m.body(x)) * 100).pow(2).sum()
    body_grad = torch.autograd.grad(loss, m.body.weight, retain_graph=True)[0]
    body0, last0, teacher0 = (t.weight.detach().clone() for t in (m.body, m.last, m.teacher))
    opt = torch.optim.SGD([m.body.weight, m.last.weight], lr=0.1)
    state = StepState(epoch=0, step=0, lr=0.1, teacher_momentum=0.9, freeze_last_layer=True)
    optimizer_step(m, opt, None, loss, state, clip_grad=2.0, params=[m.body.weight, m.last.weight])
    want_body = body0 - 0.1 * _reference_clip([body_grad], 2.0)[0]
    torch.testing.assert_close(m.body.weight.detach(), want_body)
    assert m.last.weight.grad is None and torch.equal(m.last.weight.detach(), last0)
    torch.testing.assert_close(m.teacher.weight.detach(), 0.9 * teacher0 + 0.1 * want_body)


def test_forget_optimizer_state_drops_only_the_given_parameters():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW([a, b], lr=0.1)
    (a.sum() + b.sum()).backward()
    opt.step()
    forget_optimizer_state(opt, [a])
    assert a not in opt.state and "exp_avg" in opt.state[b]


def test_schedules_are_the_core_schedules_indexed_by_step():
    class Teacher(_TwoLayer):
        freeze_last_layer_epochs = 1

        def teacher_schedule(self):
            return TeacherSchedule(momentum=0.99, warmup_temp=0.04, temp=0.07, warmup_epochs=2)

    s = Schedules.build(Teacher(), lr=0.5, min_lr=0.01, warmup_epochs=1, weight_decay=0.04, weight_decay_end=0.4,
                        epochs=3, steps_per_epoch=4)
    np.testing.assert_allclose(s.lr, cosine_schedule(0.5, 0.01, 12, warmup_steps=4))
    np.testing.assert_allclose(s.weight_decay, cosine_schedule(0.04, 0.4, 12))
    assert s.lr[3] == pytest.approx(0.5)                      # warm-up reaches the base value
    st = s.state(1, 5)
    assert (st.lr, st.weight_decay) == (pytest.approx(s.lr[5]), pytest.approx(s.weight_decay[5]))
    assert st.teacher_temp == pytest.approx(0.07) and s.state(0, 3).teacher_temp == pytest.approx(0.04)
    assert s.state(0, 3).freeze_last_layer and not st.freeze_last_layer
    assert s.teacher_momentum[0] == pytest.approx(0.99) and s.teacher_momentum[-1] < 1.0


def test_step_output_weighted_sum_and_checks():
    out = StepOutput(terms={"a": torch.tensor(2.0), "b": torch.tensor(3.0)}, weights={"b": 0.5})
    assert out.loss.item() == pytest.approx(3.5) and out.weight("a") == 1.0
    with pytest.raises(ValueError, match="do not exist"):
        StepOutput(terms={"a": torch.tensor(1.0)}, weights={"c": 1.0})
    with pytest.raises(ValueError, match="at least one"):
        StepOutput(terms={})
