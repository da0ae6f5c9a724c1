"""CLIP zero-shot classification with prompt ensembling (Radford et al., 2021, sec. 3.1.4).

Each class name is put into several templates ("a photo of a {}."), the text embeddings are
L2-normalised, averaged over templates and re-normalised: that mean is the class's
"classifier weight". An image's probabilities are
``softmax(logit_scale * <normalised image embedding, class weight>)`` over classes, with
CLIP's own learned ``logit_scale`` (100 for the released models).

``clip`` is any model with CLIP's interface: a pretrained
`deepclust.models.pretrained.ClipEncoder`, or the encoder of a run trained with
``--method clip|align|unicl`` (`deepclust.models.image_text.ImageTextEncoder`): ``embed``
(joint-space image embeddings), ``text_features`` (normalised) and ``logit_scale``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from deepclust.errors import DeepclustError

# A subset of the 80 ImageNet prompt templates from CLIP's notebook: varied quality, size,
# rendering and framing, which is where most of the ensembling gain comes from.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a blurry photo of a {}.",
    "a low resolution photo of the {}.",
    "a cropped photo of the {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of the {}.",
    "a good photo of the {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a rendering of a {}.",
    "a drawing of a {}.",
    "art of the {}.",
    "itap of a {}.",
)


def check_templates(templates: Sequence[str] | None) -> tuple[str, ...]:
    templates = tuple(templates) if templates else DEFAULT_TEMPLATES
    for t in templates:
        if "{}" not in t:
            raise DeepclustError(f"prompt template {t!r} has no '{{}}' where the class name goes "
                                 f"(e.g. 'a photo of a {{}}.')")
    return templates


def check_class_names(class_names: Sequence[str]) -> list[str]:
    names = [str(n).strip() for n in class_names if str(n).strip()]
    if len(names) < 2:
        raise DeepclustError(f"zero-shot classification needs at least 2 class names, got {names}")
    seen: set[str] = set()
    dupes = []
    for n in names:
        if n.lower() in seen:
            dupes.append(n)
        seen.add(n.lower())
    if dupes:
        raise DeepclustError(f"class names are repeated: {sorted(set(dupes))}")
    return names


def text_classifier(clip, class_names: Sequence[str],
                    templates: Sequence[str] | None = None) -> torch.Tensor:
    """Class weights ``float32 (C, P)``: per class, the re-normalised mean of the normalised
    text embeddings of every template filled with the class name."""
    names = check_class_names(class_names)
    templates = check_templates(templates)
    # Underscores in names (folder names such as "aquarium_fish") read better as spaces.
    prompts = [t.format(n.replace("_", " ")) for n in names for t in templates]
    text = clip.text_features(prompts)                       # (C*T, P), normalised
    text = text.view(len(names), len(templates), -1).mean(dim=1)
    return F.normalize(text, dim=-1)


def image_embeddings(clip, images_uint8: np.ndarray, *, batch_size: int = 64,
                     progress: bool = True) -> torch.Tensor:
    """L2-normalised projected image embeddings ``float32 (N, P)`` on the CPU."""
    feats = clip.embed(images_uint8, pooling="cls", batch_size=batch_size, progress=progress,
                       desc="CLIP image embeddings")
    return F.normalize(torch.from_numpy(feats), dim=-1)


def zero_shot_classify(clip, images_uint8: np.ndarray, class_names: Sequence[str],
                       templates: Sequence[str] | None = None, *, batch_size: int = 64,
                       progress: bool = True, image_embeds: torch.Tensor | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Classify images among ``class_names`` with no training.

    Args:
        clip: a :class:`~deepclust.models.pretrained.ClipEncoder` (``load_clip(spec)``) or a
            trained image-text run's encoder (``load_model(RUN).encoder``).
        images_uint8: ``uint8 (N, H, W, 3)``.
        class_names: C names; templates: prompt templates with ``{}`` (default: 16 of CLIP's).
        image_embeds: already computed normalised image embeddings ``(N, P)`` to reuse.

    Returns:
        ``probs float32 (N, C)`` (each row sums to one) and ``pred int64 (N,)``.
    """
    weights = text_classifier(clip, class_names, templates)                 # (C, P)
    if image_embeds is None:
        image_embeds = image_embeddings(clip, images_uint8, batch_size=batch_size, progress=progress)
    logits = clip.logit_scale * image_embeds.float() @ weights.T            # (N, C)
    probs = logits.softmax(dim=-1).numpy().astype(np.float32)
    return probs, probs.argmax(axis=1).astype(np.int64)


def match_labels(class_names: Sequence[str], folder_names: Sequence[str]) -> dict[int, int]:
    """Map predicted class index -> label index where names agree (case-insensitive; ``_``,
    ``-`` and spaces count as the same)."""
    def key(s: str) -> str:
        return " ".join(str(s).lower().replace("_", " ").replace("-", " ").split())
    by_name = {key(n): i for i, n in enumerate(folder_names)}
    return {c: by_name[key(n)] for c, n in enumerate(class_names) if key(n) in by_name}
