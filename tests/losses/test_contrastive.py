"""CLIP, ALIGN and UniCL losses against a direct, loop-by-loop computation of each paper's
formula (values and gradients), and the two-process gather against one process on the
concatenated batch."""

from __future__ import annotations

import json
import math

import pytest
import torch

from deepclust.losses.contrastive import align_loss, clip_loss, unicl_loss
from torchrun_helpers import check_two_processes, run_two_processes


def _cos(a: torch.Tensor, b: torch.Tensor) -> float | torch.Tensor:
    return (a * b).sum() / (a.norm() * b.norm())


def _log_softmax_row(scores: list[torch.Tensor], j: int) -> torch.Tensor:
    return scores[j] - torch.logsumexp(torch.stack(scores), dim=0)


def reference(image, text, scale, targets):
    """Symmetric soft-target cross-entropy written entry by entry: ``targets[i][j]`` is the
    weight of text j for image i (rows sum to one); the text -> image side uses the transpose."""
    n = len(image)
    i2t = t2i = 0.0
    for i in range(n):
        row = [scale * _cos(image[i], text[j]) for j in range(n)]
        col = [scale * _cos(image[j], text[i]) for j in range(n)]
        for j in range(n):
            i2t = i2t - targets[i][j] * _log_softmax_row(row, j)
            t2i = t2i - targets[j][i] * _log_softmax_row(col, j)
    return (i2t / n + t2i / n) / 2


def _inputs(n=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(n, d, generator=g, dtype=torch.float64).requires_grad_()
    text = torch.randn(n, d, generator=g, dtype=torch.float64).requires_grad_()
    return image, text


def test_clip_loss_is_the_symmetric_cross_entropy_of_the_scaled_cosine_matrix():
    image, text = _inputs()
    log_scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    eye = [[1.0 if i == j else 0.0 for j in range(6)] for i in range(6)]
    # the implementation computes in float32: compared with a float64 reference at float32 accuracy
    ours = clip_loss(image, text, log_scale)
    ref = reference(image, text, log_scale.exp(), eye)
    assert torch.allclose(ours.double(), ref, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(ours, (image, text, log_scale)),
                    torch.autograd.grad(ref, (image, text, log_scale))):
        assert torch.allclose(a.double(), b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_align_loss_divides_by_the_temperature_and_smooths_the_targets(smoothing):
    image, text = _inputs(seed=1)
    temperature = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    n = 6
    targets = [[(1 - smoothing) * (i == j) + smoothing / n for j in range(n)] for i in range(n)]
    ours = align_loss(image, text, temperature, label_smoothing=smoothing)
    ref = reference(image, text, 1 / temperature, targets)
    assert torch.allclose(ours.double(), ref, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(ours, (image, text, temperature)),
                    torch.autograd.grad(ref, (image, text, temperature))):
        assert torch.allclose(a.double(), b, rtol=1e-4, atol=1e-6)


def test_unicl_loss_makes_every_same_label_pair_a_positive():
    image, text = _inputs(seed=2)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    log_scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    targets = [[float(labels[i] == labels[j]) / float((labels == labels[i]).sum()) for j in range(6)]
               for i in range(6)]
    ours = unicl_loss(image, text, labels, log_scale)
    ref = reference(image, text, log_scale.exp(), targets)
    assert torch.allclose(ours.double(), ref, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(ours, (image, text, log_scale)),
                    torch.autograd.grad(ref, (image, text, log_scale))):
        assert torch.allclose(a.double(), b, rtol=1e-4, atol=1e-6)
    # the repeated labels matter: with one label per pair UniCL is CLIP, and differs here
    distinct = unicl_loss(image, text, torch.arange(6), log_scale)
    assert torch.allclose(distinct, clip_loss(image, text, log_scale))
    assert not torch.allclose(distinct, ours)


def test_losses_reject_mismatched_shapes():
    image, text = _inputs()
    with pytest.raises(ValueError):
        clip_loss(image, text[:4], torch.tensor(1.0))
    with pytest.raises(ValueError):
        unicl_loss(image, text, torch.arange(4), torch.tensor(1.0))


GATHER_SCRIPT = """
import json, sys
import torch
import torch.distributed as dist
from deepclust.core.distributed import cleanup, get_rank, init_from_env
from deepclust.losses.contrastive import align_loss, clip_loss, unicl_loss

init_from_env("cpu")
rank = get_rank()
torch.manual_seed(0)                       # the same model and data on both ranks
proj_i, proj_t = torch.nn.Linear(5, 4), torch.nn.Linear(3, 4)
scale = torch.nn.Parameter(torch.tensor(1.5))
x_img, x_txt = torch.randn(8, 5), torch.randn(8, 3)
labels = torch.tensor([0, 1, 0, 2, 1, 1, 2, 0])
rows = slice(4 * rank, 4 * rank + 4)       # rank r holds rows 4r..4r+3 of the global batch
params = list(proj_i.parameters()) + list(proj_t.parameters()) + [scale]
out = {}
for name in ("clip", "align", "unicl"):
    def loss(img, txt, lab):
        if name == "clip":
            return clip_loss(img, txt, scale)
        if name == "align":
            return align_loss(img, txt, scale.abs())
        return unicl_loss(img, txt, lab, scale)
    value = loss(proj_i(x_img[rows]), proj_t(x_txt[rows]), labels[rows])
    grads = torch.autograd.grad(value, params)
    for g in grads:                        # what DDP does: average the gradients over processes
        dist.all_reduce(g)
        g /= dist.get_world_size()
    out[name] = {"loss": value.item(), "grads": [g.flatten().tolist() for g in grads]}
cleanup()
with open(f"{sys.argv[1]}/rank{rank}.json", "w") as fh:   # after cleanup: proof this rank finished
    json.dump(out, fh)
"""


@pytest.mark.slow
def test_two_process_gathered_loss_equals_one_process_on_the_concatenated_batch(tmp_path):
    result = run_two_processes(GATHER_SCRIPT, tmp_path / "gather.py", str(tmp_path), timeout=120)
    check_two_processes(result, both_done=all((tmp_path / f"rank{r}.json").exists() for r in (0, 1)))
    torch.manual_seed(0)
    proj_i, proj_t = torch.nn.Linear(5, 4), torch.nn.Linear(3, 4)
    scale = torch.nn.Parameter(torch.tensor(1.5))
    x_img, x_txt = torch.randn(8, 5), torch.randn(8, 3)
    labels = torch.tensor([0, 1, 0, 2, 1, 1, 2, 0])
    params = list(proj_i.parameters()) + list(proj_t.parameters()) + [scale]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for name, fn in (("clip", lambda i, t: clip_loss(i, t, scale)),
                     ("align", lambda i, t: align_loss(i, t, scale.abs())),
                     ("unicl", lambda i, t: unicl_loss(i, t, labels, scale))):
        value = fn(proj_i(x_img), proj_t(x_txt))
        grads = torch.autograd.grad(value, params)
        for r in ranks:
            assert r[name]["loss"] == pytest.approx(value.item(), rel=1e-5)
            for got, want in zip(r[name]["grads"], grads):
                assert torch.allclose(torch.tensor(got), want.flatten(), atol=1e-6), name
