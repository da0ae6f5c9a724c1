"""Name clusters with CLIP: the vocabulary words whose text embedding is closest to a cluster.

Choice (documented because there are two reasonable ones): each cluster is represented by
the **mean of its images' normalised CLIP embeddings**, re-normalised, and scored against
every vocabulary entry's prompt-ensembled text embedding
(``softmax(logit_scale * <cluster mean, text>)`` over the vocabulary). Averaging in
embedding space lets every image contribute its full similarity profile, so a cluster of
"cats and some kittens" gets both names with sensible scores; per-image softmax *votes*
would instead report only the majority's top word and are noisier for small clusters.
The score is a probability over the vocabulary (rows sum to one), so it is comparable
between clusters named with the same vocabulary.

Vocabularies: a built-in name (``cifar10``, ``cifar100``, ``common``), a text file with
one entry per line (``#`` starts a comment), or a comma-separated list.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from deepclust.errors import DeepclustError
from deepclust.zeroshot import image_embeddings, text_classifier

BUILTIN_VOCABULARIES = ("cifar10", "cifar100", "common")


def _vocab_dir():
    return resources.files("deepclust").joinpath("vocab")


def builtin_vocabularies() -> list[str]:
    return sorted(p.name[:-4] for p in _vocab_dir().iterdir()
                  if p.name.endswith(".txt"))


def _parse_lines(text: str) -> list[str]:
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.append(line)
    return entries


def load_vocabulary(name_or_path: str | Sequence[str]) -> list[str]:
    """Vocabulary entries (unique, in order) from a built-in name, a file or ``"a,b,c"``."""
    if not isinstance(name_or_path, str):
        words = [str(w).strip() for w in name_or_path if str(w).strip()]
    elif os.path.isfile(name_or_path):
        words = _parse_lines(Path(name_or_path).read_text(encoding="utf-8"))
    elif name_or_path in builtin_vocabularies():
        words = _parse_lines(_vocab_dir().joinpath(
            f"{name_or_path}.txt").read_text(encoding="utf-8"))
    elif "," in name_or_path:
        words = [w.strip() for w in name_or_path.split(",") if w.strip()]
    else:
        raise DeepclustError(
            f"vocabulary '{name_or_path}' is neither a file nor a built-in vocabulary "
            f"({', '.join(builtin_vocabularies())}); pass a text file with one name per line")
    unique = list(dict.fromkeys(words))
    if len(unique) < 2:
        raise DeepclustError(f"vocabulary '{name_or_path}' has fewer than 2 entries")
    return unique


def name_clusters(clip, images_uint8: np.ndarray, labels_pred: np.ndarray,
                  vocabulary: str | Sequence[str], top_n: int = 3,
                  templates: Sequence[str] | None = None, *, max_per_cluster: int = 256,
                  seed: int = 0, batch_size: int = 64, progress: bool = True,
                  device: str = "auto", image_embeds: torch.Tensor | np.ndarray | None = None
                  ) -> dict[int, list[tuple[str, float]]]:
    """The ``top_n`` vocabulary names of each cluster with their scores.

    Args:
        clip: a CLIP encoder or a spec (``hf:openai/clip-vit-base-patch32``).
        images_uint8: ``uint8 (N, H, W, 3)``; labels_pred: ``(N,)`` cluster ids (``-1`` ignored).
        vocabulary: list of names, built-in vocabulary name or file (see module doc).
        max_per_cluster: embed at most this many images per cluster (a seeded random sample);
            the mean embedding is stable long before that and it bounds the cost.
        device: where a model given as a spec runs (``auto``: CUDA if available).
        image_embeds: normalised CLIP image embeddings ``(N, P)`` already computed (skips
            embedding and the sampling).

    Returns:
        ``{cluster: [(name, score), ...]}`` best first, scores in (0, 1).
    """
    if isinstance(clip, str):
        from deepclust.core.device import resolve_device
        from deepclust.models.pretrained import load_clip

        clip = load_clip(clip, device=resolve_device(device))
    labels_pred = np.asarray(labels_pred).astype(np.int64)
    if len(labels_pred) != len(images_uint8):
        raise DeepclustError(f"{len(labels_pred)} cluster labels for {len(images_uint8)} images")
    vocab = load_vocabulary(vocabulary)
    top_n = max(1, min(int(top_n), len(vocab)))
    clusters = sorted(int(c) for c in np.unique(labels_pred) if c >= 0)
    if not clusters:
        raise DeepclustError("no clustered images to name (all labels are -1)")

    if image_embeds is None:
        rng = np.random.default_rng(seed)
        chosen = []
        for c in clusters:
            idx = np.flatnonzero(labels_pred == c)
            if len(idx) > max_per_cluster:
                idx = np.sort(rng.choice(idx, max_per_cluster, replace=False))
            chosen.append(idx)
        order = np.concatenate(chosen)
        emb = image_embeddings(clip, images_uint8[order] if isinstance(images_uint8, np.ndarray)
                               else np.stack([images_uint8[i] for i in order]),
                               batch_size=batch_size, progress=progress)
        member_labels = labels_pred[order]
    else:
        emb = F.normalize(torch.as_tensor(np.asarray(image_embeds), dtype=torch.float32), dim=-1)
        member_labels = labels_pred

    means = torch.stack([F.normalize(emb[torch.from_numpy(member_labels == c)].mean(0), dim=0)
                         for c in clusters])                              # (K, P)
    text = text_classifier(clip, vocab, templates)                       # (V, P)
    probs = (clip.logit_scale * means @ text.T).softmax(dim=-1)          # (K, V)
    top = probs.topk(top_n, dim=-1)
    return {c: [(vocab[int(j)], float(s)) for s, j in zip(top.values[i], top.indices[i])]
            for i, c in enumerate(clusters)}


def cluster_name_strings(names: dict[int, list[tuple[str, float]]], max_names: int = 3
                         ) -> dict[int, str]:
    """``{cluster: "cat (0.61), dog (0.20)"}`` for summaries and reports."""
    return {c: ", ".join(f"{n} ({s:.2f})" for n, s in pairs[:max_names])
            for c, pairs in names.items()}


def cluster_name_list(names: dict[int, list[tuple[str, float]]], k: int) -> list[str]:
    """Best name per cluster id ``0..k-1`` (``""`` for a cluster that has none), the shape
    ``deepclust.pipeline`` uses for ``cluster_names``."""
    return [names[c][0][0] if names.get(c) else "" for c in range(k)]
