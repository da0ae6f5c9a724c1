"""Baseline features (raw pixels, PCA) under every evaluation: k-means ACC/NMI/ARI, k-NN,
linear probe, few-shot. These are the floors a learned representation has to beat.

    python benchmarks/bench_frozen_eval.py                       # digits and CIFAR-10 (from /tmp/cifar10)
    python benchmarks/bench_frozen_eval.py --datasets digits     # about a minute

CIFAR-10 is read from image folders (``--cifar-dir`` with train/ and test/ class sub-folders,
e.g. unpacked from cifar10-jpg.tar.gz). Clustering is transductive on the test split (k = 10);
k-NN and the linear probe train on ``--n-train`` random training images and score the test
split; PCA for those two is fitted on the training images only and applied to the test images.
Digits (1,797 images, 8x8 upscaled to the store's working size) is split 2/3 train, 1/3 test.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.decomposition import PCA

from deepclust.cluster import kmeans
from deepclust.data.store import ImageStore, load_images
from deepclust.evaluate import clustering_metrics, fewshot_accuracy, knn_accuracy, linear_probe_accuracy
from deepclust.features import extract_features


def subset(store: ImageStore, idx: np.ndarray, tag: str) -> ImageStore:
    return ImageStore(images=np.asarray(store.images[idx]), paths=[store.paths[i] for i in idx],
                      labels=store.labels[idx], class_names=store.class_names, skipped=[],
                      source_id=f"{store.source_id}-{tag}")


def splits(name: str, args) -> tuple[ImageStore, ImageStore]:
    rng = np.random.default_rng(0)
    if name == "digits":
        store = load_images("digits", progress=False)
        order = rng.permutation(len(store))
        cut = 2 * len(store) // 3
        return subset(store, np.sort(order[:cut]), "train"), subset(store, np.sort(order[cut:]), "test")
    train = load_images(f"{args.cifar_dir}/train", size=32, progress=True)
    test = load_images(f"{args.cifar_dir}/test", size=32, progress=True)
    keep = np.sort(rng.choice(len(train), size=min(args.n_train, len(train)), replace=False))
    return subset(train, keep, f"train{len(keep)}"), test


def timed(fn, *a, **kw):
    start = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["digits", "cifar10"])
    parser.add_argument("--cifar-dir", default="/tmp/cifar10")
    parser.add_argument("--n-train", type=int, default=10_000)
    parser.add_argument("--pca-dim", type=int, default=50)
    parser.add_argument("--n-init", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="threads for torch, faiss and BLAS")
    args = parser.parse_args()

    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    threadpool_limits(args.threads)

    print("| data | features | dim | k-means ACC | NMI | ARI | k-NN (k=20) | linear probe | 5-way 5-shot "
          "| seconds (k-means / k-NN / probe) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.datasets:
        train, test = splits(name, args)
        raw_train = extract_features(train, "raw")
        raw_test = extract_features(test, "raw")
        pca_dim = min(args.pca_dim, len(train) - 1, raw_train.shape[1])
        pca = PCA(pca_dim, whiten=True, random_state=0).fit(raw_train)
        variants = {
            "raw": (raw_train, raw_test, raw_test),
            f"pca{pca_dim} (whitened)": (
                pca.transform(raw_train).astype(np.float32),
                pca.transform(raw_test).astype(np.float32),
                extract_features(test, "pca", pca_dim=pca_dim),  # transductive PCA for clustering
            ),
        }
        for feat_name, (x_train, x_test, x_cluster) in variants.items():
            result, t_km = timed(kmeans, x_cluster, 10, n_init=args.n_init, seed=0)
            m = clustering_metrics(test.labels, result.labels)
            knn, t_knn = timed(knn_accuracy, x_train, train.labels, x_test, test.labels)
            probe, t_lp = timed(linear_probe_accuracy, x_train, train.labels, x_test, test.labels)
            fs_mean, fs_ci = fewshot_accuracy(x_test, test.labels, n_episodes=600, seed=0)
            print(f"| {name} | {feat_name} | {x_test.shape[1]} | {m['acc']:.3f} | {m['nmi']:.3f} | {m['ari']:.3f} | "
                  f"{knn:.3f} | {probe:.3f} | {fs_mean:.3f} ± {fs_ci:.3f} | {t_km:.1f} / {t_knn:.1f} / {t_lp:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
