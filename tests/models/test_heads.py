"""Heads: DINO head normalisation and gradients, SwAV prototypes, projector, classifier."""

import copy

import pytest
import torch
from torch.nn import functional as F

from deepclust.models.heads import ClassifierHead, DINOHead, MLPProjector, Prototypes

torch.set_num_threads(1)


def test_mlp_projector_layers_and_shapes():
    torch.manual_seed(0)
    proj = MLPProjector(16, 32, 8, n_layers=2, use_bn=True)
    assert [type(m).__name__ for m in proj.net] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert proj(torch.randn(5, 16)).shape == (5, 8)
    three = MLPProjector(16, 32, 8, n_layers=3, use_bn=False)
    assert [type(m).__name__ for m in three.net] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    one = MLPProjector(16, 32, 8, n_layers=1)
    assert len(one.net) == 1 and one.net[0].in_features == 16
    with pytest.raises(ValueError, match="positive"):
        MLPProjector(16, 32, 0)


def test_dino_head_matches_direct_formula():
    torch.manual_seed(0)
    head = DINOHead(12, out_dim=20, hidden_dim=16, bottleneck_dim=6, n_layers=3)
    x = torch.randn(4, 12)
    # Direct computation: MLP with GELU, L2-normalise, W = g * V / ||V|| (row-wise), no bias.
    l1, l2, l3 = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    z = l3(F.gelu(l2(F.gelu(l1(x)))))
    z = z / z.norm(dim=1, keepdim=True)
    v, g = head.last_layer.weight_v, head.last_layer.weight_g
    expected = z @ (g * v / v.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(head(x), expected)


def test_dino_head_norm_last_layer_fixes_unit_rows():
    torch.manual_seed(0)
    head = DINOHead(12, out_dim=20, hidden_dim=16, bottleneck_dim=6)
    assert not head.last_layer.weight_g.requires_grad
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(20))
    out = head(torch.randn(8, 12))
    assert out.shape == (8, 20) and out.abs().max() <= 1.0 + 1e-6  # cosine similarities
    # An optimiser step (on the trainable params) keeps the rows at unit norm.
    opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=1.0)
    head(torch.randn(8, 12)).logsumexp(1).sum().backward()
    opt.step()
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(20))

    free = DINOHead(12, out_dim=20, hidden_dim=16, bottleneck_dim=6, norm_last_layer=False)
    assert free.last_layer.weight_g.requires_grad
    free(torch.randn(8, 12)).logsumexp(1).sum().backward()
    assert free.last_layer.weight_g.grad.abs().sum() > 0


def test_dino_head_gradients_flow_and_can_be_cancelled():
    torch.manual_seed(0)
    head = DINOHead(12, out_dim=20, hidden_dim=16, bottleneck_dim=6, use_bn=True)
    x = torch.randn(8, 12, requires_grad=True)
    head(x).logsumexp(1).sum().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in head.mlp.parameters())
    assert head.last_layer.weight_v.grad.abs().sum() > 0
    head.cancel_last_layer_gradients()
    assert head.last_layer.weight_v.grad is None
    assert head.mlp[0].weight.grad is not None
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in head.mlp)


def test_dino_head_deepcopy_and_state_dict_names():
    head = DINOHead(12, out_dim=20, hidden_dim=16, bottleneck_dim=6, n_layers=1)
    teacher = copy.deepcopy(head)
    with torch.no_grad():
        teacher.last_layer.weight_v.mul_(3.0)
    x = torch.randn(3, 12)
    torch.testing.assert_close(teacher(x), head(x))  # scale of V does not matter
    keys = set(head.state_dict())
    assert {"last_layer.weight_v", "last_layer.weight_g"} <= keys  # DINO checkpoint names
    assert head.out_dim == 20 and DINOHead(4).out_dim == 65536


def test_prototypes_normalize_gives_unit_rows():
    torch.manual_seed(0)
    protos = Prototypes(8, 30)
    with torch.no_grad():
        protos.weight.mul_(5.0)
    assert not torch.allclose(protos.weight.norm(dim=1), torch.ones(30))
    assert protos.normalize_() is protos
    torch.testing.assert_close(protos.weight.norm(dim=1), torch.ones(30))
    z = F.normalize(torch.randn(4, 8), dim=1)
    scores = protos(z)
    torch.testing.assert_close(scores, z @ protos.weight.T)
    assert scores.abs().max() <= 1 + 1e-6
    assert protos.layer.bias is None


def test_classifier_head_reset():
    torch.manual_seed(0)
    clf = ClassifierHead(16, 10)
    assert clf(torch.randn(3, 16)).shape == (3, 10)
    assert abs(clf.linear.weight.std().item() - 0.01) < 0.003 and (clf.linear.bias == 0).all()
    with torch.no_grad():
        clf.linear.weight.fill_(1.0)
        clf.linear.bias.fill_(1.0)
    clf.reset_parameters()
    assert (clf.linear.bias == 0).all() and clf.linear.weight.abs().max() < 0.1
    clf.reset_parameters(k=4)
    assert clf.k == 4 and clf(torch.randn(3, 16)).shape == (3, 4)
