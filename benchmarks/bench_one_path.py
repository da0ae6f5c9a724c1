"""Wall time of one `deepclust cluster` that needs the model three times: features, attention
maps and CLIP names (`--model M --attention --namer M`), with a fresh cache each run.

Before the one-path change, the model was loaded twice (once with eager attention) and the
images embedded twice (features, then again by the namer); after it, once each. The model is a
random-weight CLIP saved with `save_pretrained` (no download), sized so that embedding is a
visible share of the time; `--checkout DIR` runs another source tree of deepclust (e.g. a
`git worktree` of the commit before) with the same script, for a before/after pair.

    python benchmarks/bench_one_path.py --images 2000 --repeats 3
    git worktree add /tmp/dc-before 12746b9
    python benchmarks/bench_one_path.py --images 2000 --repeats 3 --checkout /tmp/dc-before
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_line, matmul_peaks  # noqa: E402


def build_clip(directory: Path, image_size: int, hidden: int, layers: int) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTextConfig, CLIPTokenizer, CLIPVisionConfig

    from pretrained_fixtures import write_clip_tokenizer_files

    directory.mkdir(parents=True, exist_ok=True)
    vocab_size = write_clip_tokenizer_files(directory)
    tokenizer = CLIPTokenizer.from_pretrained(str(directory), model_max_length=16)
    eos, bos = tokenizer.convert_tokens_to_ids("<|endoftext|>"), tokenizer.convert_tokens_to_ids("<|startoftext|>")
    text = CLIPTextConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=16, eos_token_id=eos, bos_token_id=bos,
                          pad_token_id=eos)
    vision = CLIPVisionConfig(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                              num_attention_heads=max(1, hidden // 64), image_size=image_size, patch_size=8)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=64)
              ).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(directory)
    return directory


def write_images(path: Path, n: int, seed: int = 0) -> Path:
    """An .npz of `n` 32x32 images: CIFAR-10 test images when unpacked at /tmp/cifar10, else noise."""
    root = Path("/tmp/cifar10/test")
    if root.is_dir():
        from PIL import Image

        files = sorted(root.rglob("*.jpg"))
        files = files[:: max(1, len(files) // n)][:n]
        images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    else:
        images = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    np.savez(path, images=images)
    return path


def run_once(source: Path, model: Path, out: Path, checkout: Path | None) -> float:
    env = dict(os.environ, DEEPCLUST_CACHE=str(out / "cache"), HF_HUB_OFFLINE="1")
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout / "src")
    cmd = [sys.executable, "-m", "deepclust", "cluster", str(source), "--k", "10", "--out", str(out / "run"),
           "--model", f"hf:{model}", "--attention", "--namer", f"hf:{model}", "--vocab", "cifar10",
           "--device", "cpu", "--quiet"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--checkout", type=Path, default=None, help="another deepclust source tree to time")
    args = parser.parse_args()
    peaks = matmul_peaks()
    with tempfile.TemporaryDirectory(prefix="bench-one-path-") as tmp:
        tmp_path = Path(tmp)
        model = build_clip(tmp_path / "clip", args.image_size, args.hidden, args.layers)
        source = write_images(tmp_path / "images.npz", args.images)
        times = []
        for r in range(args.repeats):
            out = tmp_path / f"r{r}"
            times.append(run_once(source, model, out, args.checkout))
    print(json.dumps({"checkout": str(args.checkout or "this tree"), "images": args.images,
                      "clip_vision": f"{args.layers} layers x {args.hidden}, {args.image_size} px, patch 8",
                      "seconds": [round(t, 2) for t in times], "median_s": round(statistics.median(times), 2),
                      "machine": machine_line(peaks), "date": time.strftime("%Y-%m-%d %H:%M")}, indent=2))


if __name__ == "__main__":
    main()
