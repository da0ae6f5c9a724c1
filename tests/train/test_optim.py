"""Optimisers: LARS against a direct computation; build_optimizer groups and per-step hyper-parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepclust.errors import DeepclustError
from deepclust.train.optim import LARS, build_optimizer, set_step_hyperparameters


def test_lars_matches_direct_computation():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(3, 4))
    b = nn.Parameter(torch.randn(3))
    grads = [(torch.randn(3, 4), torch.randn(3)) for _ in range(2)]
    lr, mom, wd, eta = 0.5, 0.9, 0.01, 0.001
    opt = LARS([w, b], lr=lr, momentum=mom, weight_decay=wd, eta=eta)

    w_ref, b_ref = w.detach().clone(), b.detach().clone()
    buf_w, buf_b = torch.zeros_like(w_ref), torch.zeros_like(b_ref)
    for gw, gb in grads:
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
        # weight matrix: decay, then trust ratio eta * ||w|| / ||g + wd w||
        u = gw + wd * w_ref
        u = u * (eta * w_ref.norm() / u.norm())
        buf_w = mom * buf_w + u
        w_ref = w_ref - lr * buf_w
        # bias: excluded from adaptation and weight decay
        buf_b = mom * buf_b + gb
        b_ref = b_ref - lr * buf_b
    torch.testing.assert_close(w.detach(), w_ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(b.detach(), b_ref, rtol=1e-6, atol=1e-7)


def test_lars_zero_weight_tensor_gets_unit_trust_ratio():
    w = nn.Parameter(torch.zeros(2, 2))
    opt = LARS([w], lr=1.0, momentum=0.0, weight_decay=0.0)
    w.grad = torch.ones(2, 2)
    opt.step()
    assert torch.equal(w.detach(), -torch.ones(2, 2))


def test_build_optimizer_and_step_hyperparameters_keep_no_decay_groups_at_zero():
    model = nn.Linear(3, 2)
    opt = build_optimizer("sgd", [{"params": [model.weight], "weight_decay": 0.1},
                                  {"params": [model.bias], "weight_decay": 0.0, "lr_scale": 0.5}], lr=1.0)
    set_step_hyperparameters(opt, lr=0.2, weight_decay=0.3)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.3, 0.0]
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.1]
    with pytest.raises(DeepclustError, match="adamw, sgd, lars"):
        build_optimizer("adam2", [{"params": [model.weight]}], lr=1.0)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(DeepclustError, match="no trainable parameters"):
        build_optimizer("sgd", [{"params": list(frozen.parameters())}], lr=1.0)


# --- --init's adaptation: lower lr and BEiT layer-wise decay (issue 14) ------------------------

def _tiny_vit_dino():
    from deepclust.methods import build_method
    from deepclust.models.backbones import build_backbone

    torch.manual_seed(0)
    trunk = build_backbone("vit", img_size=16, embed_dim=16, depth=3, num_heads=2, patch_size=4,
                           num_register_tokens=1, pre_norm=True)
    return build_method("dino", trunk, k=4, img_size=16, out_dim=8, hidden_dim=16, bottleneck_dim=8)


def test_layer_decay_groups_follow_beits_definition():
    from deepclust.train.optim import adaptation_parameter_groups, vit_layer_id

    method = _tiny_vit_dino()
    depth, decay, scale = 3, 0.5, 0.1
    groups = adaptation_parameter_groups(method, 0.04, lr_scale=scale, layer_decay=decay)
    names = {id(p): n for n, p in method.named_parameters()}

    def layer_by_hand(name: str) -> int:  # BEiT's get_layer_id_for_vit, written out
        if not name.startswith("backbone.trunk."):
            return depth + 1                          # heads
        rest = name[len("backbone.trunk."):]
        if rest.startswith(("patch_embed.", "cls_token", "pos_embed", "register_tokens", "pre_norm.")):
            return 0
        if rest.startswith("blocks."):
            return int(rest.split(".")[1]) + 1
        return depth + 1                              # final norm

    seen = []
    for g in groups:
        for p in g["params"]:
            name = names[id(p)]
            layer = layer_by_hand(name)
            assert vit_layer_id(name, depth) == layer == g["layer_id"], name
            assert g["lr_scale"] == pytest.approx(scale * decay ** (depth + 1 - layer)), name
            no_decay = p.ndim <= 1 or name.endswith(".bias")
            assert g["weight_decay"] == (0.0 if no_decay else 0.04), name
            seen.append(name)
    trainable = [n for n, p in method.named_parameters() if p.requires_grad]
    assert sorted(seen) == sorted(trainable) and len(seen) == len(set(seen))  # each exactly once
    # end points: the embeddings get decay^(depth+1), the last block decay^1, heads the full (scaled) rate
    by_layer = {g["layer_id"]: g["lr_scale"] for g in groups}
    assert by_layer[0] == pytest.approx(scale * decay ** 4) and by_layer[3] == pytest.approx(scale * decay)
    assert by_layer[4] == pytest.approx(scale)
    # the loop applies lr_scale to the scheduled lr of every group
    opt = build_optimizer("adamw", groups, lr=1.0)
    set_step_hyperparameters(opt, 2e-3, 0.04)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(2e-3 * scale * decay ** (depth + 1 - g["layer_id"]))


def test_no_adaptation_keeps_the_methods_groups_and_conv_nets_refuse_layer_decay():
    from deepclust.methods import build_method
    from deepclust.models.backbones import build_backbone
    from deepclust.train.optim import adaptation_parameter_groups

    method = _tiny_vit_dino()
    plain = method.parameter_groups(0.04)
    same = adaptation_parameter_groups(method, 0.04)
    assert [[id(p) for p in g["params"]] for g in same] == [[id(p) for p in g["params"]] for g in plain]
    scaled = adaptation_parameter_groups(method, 0.04, lr_scale=0.1, layer_decay=1.0)
    assert [g["lr_scale"] for g in scaled] == [0.1, 0.1]
    cnn = build_method("dino", build_backbone("small_cnn", img_size=16), k=4, img_size=16, out_dim=8,
                       hidden_dim=16, bottleneck_dim=8)
    with pytest.raises(DeepclustError, match="layer_decay needs a ViT"):
        adaptation_parameter_groups(cnn, 0.04, layer_decay=0.9)
