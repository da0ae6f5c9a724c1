"""Tiny random-weight DINOv2 and CLIP models saved like real checkpoints (``save_pretrained``).

Used by ``tests/test_pretrained_*.py`` to run the real loading code (``hf:<tmp dir>``)
without any download. The CLIP tokenizer is a genuine byte-level BPE: every byte has a
token (so any word tokenises), plus merges that build the words the tests use.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

# Words the tests write in prompts, class names and vocabularies; each gets BPE merges.
WORDS = ("a photo of the large small blurry bad good cropped close up picture rendering "
         "cat dog car truck bird ship frog horse deer airplane automobile red blue green "
         "object thing animal vehicle").split()

CLASSES = ["red", "green", "blue"]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_clip_tokenizer_files(directory: Path, words=WORDS) -> int:
    """Write ``vocab.json`` + ``merges.txt``; returns the vocabulary size."""
    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
    merges: list[str] = []
    for word in words:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        current = symbols[0]
        for nxt in symbols[1:]:
            merge = f"{current} {nxt}"
            if merge not in merges:
                merges.append(merge)
            current = current + nxt
            vocab.setdefault(current, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                          encoding="utf-8")
    return len(vocab)


def build_tiny_dinov2(directory: Path) -> Path:
    """A 2-layer, 32-d DINOv2 at 32 px with 8 px patches (4x4 grid) + a Bit processor that
    resizes the shortest edge to 40 and centre-crops 32 (so crop offsets are exercised)."""
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, image_size=32, patch_size=8)
    Dinov2Model(config).save_pretrained(directory)
    BitImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32},
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]
                      ).save_pretrained(directory)
    return directory


def build_tiny_clip(directory: Path) -> Path:
    """A tiny CLIP (32-d towers, 2 layers, 16-d projection, 32 px images, 8 px patches) with
    a CLIP image processor and a real BPE tokenizer."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTextConfig, CLIPTokenizer, CLIPVisionConfig

    directory.mkdir(parents=True, exist_ok=True)
    vocab_size = write_clip_tokenizer_files(directory)
    tokenizer = CLIPTokenizer.from_pretrained(str(directory), model_max_length=16)
    eos_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    bos_id = tokenizer.convert_tokens_to_ids("<|startoftext|>")
    text = CLIPTextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                          num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=16,
                          eos_token_id=eos_id, bos_token_id=bos_id, pad_token_id=eos_id)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, image_size=32, patch_size=8)
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                        projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
                       ).save_pretrained(directory)
    return directory


def colour_folder(root: Path, n_per_class: int = 6, size: int = 24, seed: int = 0) -> Path:
    """``root/<red|green|blue>/*.png``: noisy images dominated by one colour channel."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = rng.integers(0, 70, size=(size, size, 3), dtype=np.uint8)
            img[..., c] = rng.integers(170, 255, size=(size, size), dtype=np.uint8)
            Image.fromarray(img).save(root / name / f"{name}_{i}.png")
    return root


# Built once per test process: the fixtures below are imported into several test modules,
# and pytest would otherwise build a session fixture once per module that imports it.
_BUILT: dict[str, Path] = {}


def _once(name: str, tmp_path_factory, build) -> Path:
    if name not in _BUILT:
        _BUILT[name] = build(tmp_path_factory.mktemp(name))
    return _BUILT[name]


@pytest.fixture(scope="session")
def tiny_dinov2_dir(tmp_path_factory) -> Path:
    return _once("tiny_dinov2", tmp_path_factory, build_tiny_dinov2)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    return _once("tiny_clip", tmp_path_factory, build_tiny_clip)


@pytest.fixture(scope="session")
def colour_images_dir(tmp_path_factory) -> Path:
    return _once("colours", tmp_path_factory, colour_folder)


@pytest.fixture(scope="session")
def colour_test_images_dir(tmp_path_factory) -> Path:
    return _once("colours_test", tmp_path_factory, lambda d: colour_folder(d, seed=1))


def perturbed_copy(src: Path, dst: Path, seed: int = 0) -> Path:
    """``src`` (a tiny model above) re-saved to ``dst`` with every weight moved by seeded noise,
    so that LayerNorm affines, LayerScale, biases and tokens all differ from their initial
    values (a mapping that dropped one of them would show). Processor and tokenizer files are
    copied as they are."""
    import shutil

    import torch
    from transformers import AutoModel

    shutil.copytree(src, dst)
    model = AutoModel.from_pretrained(str(src), use_safetensors=True)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(dst)
    return dst


def build_tiny_dinov2_registers(directory: Path) -> Path:
    """A 2-layer, 32-d DINOv2 with 2 register tokens at 32 px, 8 px patches (Bit processor: 32 px)."""
    import torch
    from transformers import BitImageProcessor, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(0)
    config = Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                                       patch_size=8, num_register_tokens=2, layerscale_value=0.5)
    Dinov2WithRegistersModel(config).save_pretrained(directory)
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_trainable_dirs(tmp_path_factory) -> dict[str, Path]:
    """Perturbed tiny DINOv2, DINOv2-with-registers and CLIP folders (see `perturbed_copy`)."""
    def build(root: Path) -> Path:
        perturbed_copy(build_tiny_dinov2(root / "src_dinov2"), root / "dinov2", seed=1)
        perturbed_copy(build_tiny_dinov2_registers(root / "src_registers"), root / "dinov2_with_registers", seed=2)
        perturbed_copy(build_tiny_clip(root / "src_clip"), root / "clip", seed=3)
        return root

    root = _once("tiny_trainable", tmp_path_factory, build)
    return {name: root / name for name in ("dinov2", "dinov2_with_registers", "clip")}
