"""Image <-> text retrieval recall@k on embeddings in a joint space (CLIP-style models).

``recall_at_k(image_emb, text_emb, image_keys, text_keys)``: each image ranks every text by
cosine similarity and counts a hit at k when one of its k nearest texts has the image's key;
each text ranks every image the same way. The keys say what counts as a match:

* caption data: the key of a text is the index of its image (``image_keys = arange(N)``),
  the usual instance-level recall of CLIP / ALIGN (Flickr30k, COCO);
* class-templated captions (UniCL's image-label data, CIFAR-10 prompts): the class id, so a
  retrieved text or image of the right class is a hit (class-level recall; with one text
  per class, image -> text R@1 is zero-shot accuracy).

Similarities are computed in blocks of rows, so 10k x 10k runs in little memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["recall_at_k"]


def _hits(queries: torch.Tensor, gallery: torch.Tensor, query_keys: torch.Tensor, gallery_keys: torch.Tensor,
          ks: Sequence[int], block: int) -> dict[int, float]:
    """Fraction of queries with a same-key gallery item among their k most similar."""
    k_max = min(max(ks), len(gallery))
    found = {k: 0 for k in ks}
    for start in range(0, len(queries), block):
        sims = queries[start:start + block] @ gallery.t()
        top = sims.topk(k_max, dim=1).indices                               # (b, k_max)
        match = gallery_keys[top] == query_keys[start:start + block, None]  # (b, k_max)
        for k in ks:
            found[k] += int(match[:, :k].any(dim=1).sum())
    return {k: found[k] / len(queries) for k in ks}


def recall_at_k(image_emb: np.ndarray | torch.Tensor, text_emb: np.ndarray | torch.Tensor,
                image_keys: np.ndarray | Sequence[int], text_keys: np.ndarray | Sequence[int], *,
                ks: Sequence[int] = (1, 5), block: int = 1024) -> dict[str, float]:
    """Recall@k both ways (see module doc).

    Args:
        image_emb: ``(N, D)`` image embeddings; text_emb: ``(M, D)`` text embeddings (any
            scale: both are L2-normalised here).
        image_keys: ``(N,)`` ints; text_keys: ``(M,)`` ints -- equal keys match.
        ks: the cut-offs.

    Returns:
        ``{"i2t_r1": ..., "i2t_r5": ..., "t2i_r1": ..., "t2i_r5": ...}`` in [0, 1].
    """
    img = F.normalize(torch.as_tensor(np.asarray(image_emb), dtype=torch.float32), dim=-1)
    txt = F.normalize(torch.as_tensor(np.asarray(text_emb), dtype=torch.float32), dim=-1)
    ik = torch.as_tensor(np.asarray(image_keys), dtype=torch.int64)
    tk = torch.as_tensor(np.asarray(text_keys), dtype=torch.int64)
    if img.ndim != 2 or txt.ndim != 2 or img.shape[1] != txt.shape[1]:
        raise ValueError(f"need (N, D) image and (M, D) text embeddings, got {tuple(img.shape)}, {tuple(txt.shape)}")
    if ik.shape != (len(img),) or tk.shape != (len(txt),):
        raise ValueError("need one key per image and one per text")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    i2t = _hits(img, txt, ik, tk, ks, block)
    t2i = _hits(txt, img, tk, ik, ks, block)
    out = {f"i2t_r{k}": i2t[k] for k in ks}
    out.update({f"t2i_r{k}": t2i[k] for k in ks})
    return out
