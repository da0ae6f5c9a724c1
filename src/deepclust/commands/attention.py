"""``deepclust attention``: last-layer CLS attention maps and DINO-style masks of a ViT."""

from __future__ import annotations

import argparse
import html
from pathlib import Path

DESCRIPTION = """\
Show where a ViT looks: for each image of SOURCE, the last layer's attention of the
CLS token to the patches (mean over heads, and each head), overlaid on the image, and
the mask of the patches that hold the top MASS of the attention (0.6 as in DINO).

Writes DIR/<nnnn>_overlay.png, <nnnn>_heads.png, <nnnn>_mask.png and DIR/index.html.
The model is a pretrained ViT (hf:facebook/dinov2-small, hf:openai/clip-...) or a run
directory trained with a vit_* backbone."""

EPILOG = """\
Example:
  deepclust attention photos/ --model hf:facebook/dinov2-small --out runs/attn --limit 20
  deepclust attention photos/ --model runs/dino-vit --mass 0.8 --out runs/attn-dino"""


def register(subparsers) -> None:
    from deepclust.commands._pretrained_common import add_common_args

    p = subparsers.add_parser("attention", help="ViT attention maps and masks per image",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="SOURCE", help="folder, .npz file, 'digits' or a known data set")
    p.add_argument("--model", required=True, metavar="hf:ID|DIR",
                   help="ViT model: hf:<id or dir>, a HF folder or a run directory")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--mass", type=float, default=0.6, help="attention mass kept by the mask, in (0, 1] (default: 0.6)")
    p.add_argument("--limit", type=int, default=32, metavar="N", help="at most N images, the first ones (default: 32)")
    add_common_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from deepclust.attention import _hstack, attention_mask, cls_attention_maps, masked, overlay, to_png
    from deepclust.core.io import atomic_write_bytes, atomic_write_text
    from deepclust.data.store import load_images
    from deepclust.errors import DeepclustError
    from deepclust.features import load_model

    if not 0 < args.mass <= 1:
        raise DeepclustError(f"--mass must be in (0, 1], got {args.mass}")
    if args.limit < 1:
        raise DeepclustError(f"--limit must be at least 1, got {args.limit}")
    loaded = load_model(args.model, device=args.device, attentions=True)
    trained_size = loaded.image_size
    if trained_size is not None and args.size not in (None, trained_size):
        raise DeepclustError(f"the run in {args.model} was trained on {trained_size}px images; "
                             f"drop --size or pass --size {trained_size}")
    if not loaded.encoder.has_attention:
        from deepclust.pipeline import no_attention_message

        raise DeepclustError(no_attention_message(loaded))
    store = load_images(args.source, size=trained_size or args.size, max_size=loaded.max_size,
                        progress=not args.quiet)
    n = min(args.limit, len(store.paths))
    images = np.asarray(store.images[:n])
    maps = cls_attention_maps(loaded.encoder, images, batch_size=args.batch_size)     # (n, heads, h, w)
    mean_maps = maps.mean(axis=1)
    masks = attention_mask(mean_maps, args.mass)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        stem = f"{i:04d}"
        atomic_write_bytes(out / f"{stem}_overlay.png", to_png(overlay(images[i], mean_maps[i])))
        atomic_write_bytes(out / f"{stem}_heads.png", to_png(_hstack([overlay(images[i], h) for h in maps[i]])))
        atomic_write_bytes(out / f"{stem}_mask.png", to_png(masked(images[i], masks[i])))
        rows.append(f"<tr><td>{html.escape(str(store.paths[i]))}<br>{int(masks[i].sum())}/{masks[i].size} "
                    f"patches kept</td><td><img src='{stem}_overlay.png'></td><td><img src='{stem}_mask.png'>"
                    f"</td><td><img src='{stem}_heads.png'></td></tr>")
    page = (f"<!doctype html><meta charset='utf-8'><title>attention: {html.escape(args.model)}</title>"
            f"<style>body{{font-family:sans-serif}}td{{padding:4px;vertical-align:top}}</style>"
            f"<h1>Last-layer CLS attention: {html.escape(args.model)}</h1>"
            f"<p>{n} images; mask keeps {args.mass:.0%} of the attention mass (mean over heads).</p>"
            f"<table><tr><th>image</th><th>mean over heads</th><th>mask</th><th>each head</th></tr>"
            + "".join(rows) + "</table>")
    atomic_write_text(out / "index.html", page)
    print(f"attention maps of {n} images ({maps.shape[1]} heads, {maps.shape[2]}x{maps.shape[3]} patches) "
          f"written to {out} (open {out / 'index.html'})")
    return 0
