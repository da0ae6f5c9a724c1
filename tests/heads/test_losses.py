"""SCAN, entropy, self-label and TEMI losses against loop-by-loop computations of the formulas."""

import math

import pytest
import torch

from deepclust.heads.losses import (
    class_balance_weights,
    entropy_of_mean,
    scan_loss,
    self_label_loss,
    self_label_targets,
    temi_loss,
    update_marginal,
)


def _softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


def _scan_direct(anchors, neighbours, w):
    """-1/B sum_i log <p_a, p_n> + w sum_k pbar_k log pbar_k, written with loops."""
    b, k = len(anchors), len(anchors[0])
    pa = [_softmax(r) for r in anchors]
    pn = [_softmax(r) for r in neighbours]
    consistency = -sum(math.log(sum(pa[i][c] * pn[i][c] for c in range(k))) for i in range(b)) / b
    mean = [sum(pa[i][c] for i in range(b)) / b for c in range(k)]
    entropy = -sum(m * math.log(m) for m in mean)
    return consistency - w * entropy, consistency, entropy


def test_scan_loss_and_entropy_match_the_formula():
    gen = torch.Generator().manual_seed(0)
    a, n = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    total, consistency, entropy = scan_loss(a, n, entropy_weight=5.0)
    want = _scan_direct(a.tolist(), n.tolist(), 5.0)
    assert total.item() == pytest.approx(want[0], rel=1e-5)
    assert consistency.item() == pytest.approx(want[1], rel=1e-5)
    assert entropy.item() == pytest.approx(want[2], rel=1e-5)
    assert entropy_of_mean(torch.full((3, 4), 0.25)).item() == pytest.approx(math.log(4))


def test_scan_loss_gradients_match_the_formula():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    n = torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    scan_loss(a, n, entropy_weight=2.0)[0].backward()
    eps = 1e-6
    for tensor in (a, n):
        for i, c in [(0, 0), (2, 1), (4, 2)]:
            base_a, base_n = a.detach().tolist(), n.detach().tolist()
            up_a, up_n = [r[:] for r in base_a], [r[:] for r in base_n]
            dn_a, dn_n = [r[:] for r in base_a], [r[:] for r in base_n]
            target_up, target_dn = (up_a, dn_a) if tensor is a else (up_n, dn_n)
            target_up[i][c] += eps
            target_dn[i][c] -= eps
            numeric = (_scan_direct(up_a, up_n, 2.0)[0] - _scan_direct(dn_a, dn_n, 2.0)[0]) / (2 * eps)
            assert tensor.grad[i, c].item() == pytest.approx(numeric, rel=1e-4, abs=1e-7)


def test_multi_head_scan_is_one_loss_per_head():
    gen = torch.Generator().manual_seed(2)
    a, n = torch.randn(3, 6, 4, generator=gen), torch.randn(3, 6, 4, generator=gen)
    per_head = scan_loss(a, n, 5.0)[0]
    assert per_head.shape == (3,)
    for h in range(3):
        assert per_head[h].item() == pytest.approx(scan_loss(a[h], n[h], 5.0)[0].item(), rel=1e-6)


def test_self_label_mask_targets_and_class_weights():
    weak = torch.tensor([[10.0, 0.0, 0.0], [0.0, 9.0, 0.0], [1.0, 1.2, 0.0], [8.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    mask, targets = self_label_targets(weak, threshold=0.99)
    probs = [_softmax(r) for r in weak.tolist()]
    assert mask.tolist() == [max(p) > 0.99 for p in probs] == [True, True, False, True, False]
    assert targets.tolist() == [0, 1, 1, 0, 2]
    weights = class_balance_weights(targets[mask], 3)
    assert weights.tolist() == pytest.approx([3 / 2, 3 / 1, 1.0])  # n / n_c; absent class: 1


def test_self_label_loss_is_the_class_balanced_ce_of_confident_strong_views():
    weak = torch.tensor([[10.0, 0.0, 0.0], [0.0, 9.0, 0.0], [1.0, 1.2, 0.0], [8.0, 0.0, 0.0]])
    strong = torch.randn(4, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64,
                         requires_grad=True)
    loss, mask = self_label_loss(strong, weak.double(), threshold=0.99, balanced=True)
    rows, targets = [0, 1, 3], [0, 1, 0]
    counts = {0: 2, 1: 1}
    w = {c: 3 / counts[c] for c in counts}
    ce = [-math.log(_softmax(strong[r].tolist())[t]) for r, t in zip(rows, targets)]
    want = sum(w[t] * c for t, c in zip(targets, ce)) / sum(w[t] for t in targets)
    assert mask.tolist() == [True, True, False, True]
    assert loss.item() == pytest.approx(want, rel=1e-9)
    # equal class weight: the mean of per-class mean CE
    assert want == pytest.approx(((ce[0] + ce[2]) / 2 + ce[1]) / 2, rel=1e-9)
    loss.backward()
    p = [_softmax(strong[r].tolist()) for r in range(4)]
    norm = sum(w[t] for t in targets)
    for r, t in zip(rows, targets):
        for c in range(3):
            assert strong.grad[r, c].item() == pytest.approx(w[t] * (p[r][c] - (c == t)) / norm, rel=1e-6)
    assert strong.grad[2].abs().sum().item() == 0.0  # not confident: no gradient
    unconfident, none = self_label_loss(strong, torch.zeros(4, 3, dtype=torch.float64), 0.99)
    assert not none.any() and unconfident.item() == 0.0


def _temi_direct(sa, sb, ta, tb, pk, beta, ts, tt):
    """Per head: -1/2 mean_i w_i [pmi(s_a, t_b) + pmi(s_b, t_a)], w_i = 1/H sum_h <q_t^h(a), q_t^h(b)>."""
    heads, b, k = len(sa), len(sa[0]), len(sa[0][0])
    q = lambda row, t: _softmax([v / t for v in row])  # noqa: E731
    w = [sum(sum(x * y for x, y in zip(q(ta[h][i], tt), q(tb[h][i], tt))) for h in range(heads)) / heads
         for i in range(b)]
    out = []
    for h in range(heads):
        def pmi(s, t, h=h):
            return math.log(sum((s[c] * t[c]) ** beta / pk[h][c] for c in range(k)))
        total = sum(w[i] * (pmi(q(sa[h][i], ts), q(tb[h][i], tt)) + pmi(q(sb[h][i], ts), q(ta[h][i], tt)))
                    for i in range(b))
        out.append(-total / b / 2)
    return out


def test_temi_loss_matches_the_formula_with_gradients():
    gen = torch.Generator().manual_seed(4)
    sa, sb = (torch.randn(2, 5, 3, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2))
    ta, tb = (torch.randn(2, 5, 3, generator=gen, dtype=torch.float64) for _ in range(2))
    pk = torch.softmax(torch.randn(2, 3, generator=gen, dtype=torch.float64), -1)
    loss = temi_loss(sa, sb, ta, tb, pk, beta=0.6, student_temp=0.2, teacher_temp=0.1)
    want = _temi_direct(sa.tolist(), sb.tolist(), ta.tolist(), tb.tolist(), pk.tolist(), 0.6, 0.2, 0.1)
    assert loss.tolist() == pytest.approx(want, rel=1e-9)
    loss.sum().backward()
    eps = 1e-6
    for h, i, c in [(0, 0, 0), (1, 3, 2)]:
        up, dn = sa.detach().clone(), sa.detach().clone()
        up[h, i, c] += eps
        dn[h, i, c] -= eps
        f = lambda s: sum(_temi_direct(s.tolist(), sb.tolist(), ta.tolist(), tb.tolist(), pk.tolist(),  # noqa: E731
                                       0.6, 0.2, 0.1))
        assert sa.grad[h, i, c].item() == pytest.approx((f(up) - f(dn)) / (2 * eps), rel=1e-4, abs=1e-8)


def test_update_marginal_is_an_ema_of_both_views():
    ta, tb = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    old = torch.full((2, 3), 1 / 3)
    new = update_marginal(old, ta, tb, teacher_temp=0.5, momentum=0.9)
    probs = torch.cat([torch.softmax(ta / 0.5, -1), torch.softmax(tb / 0.5, -1)], dim=1).mean(dim=1)
    assert torch.allclose(new, 0.9 * old + 0.1 * probs)
    assert torch.allclose(new.sum(-1), torch.ones(2))
