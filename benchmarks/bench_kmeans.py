"""k-means speed: deepclust's faiss backend against scikit-learn on the same data, same run.

Data: a Gaussian mixture (10 components, 512-D, float32), the shape of a feature matrix that
DeepCluster clusters every epoch. Every variant gets the same number of restarts and Lloyd
iterations, and inertia (sum of squared distances to the assigned centroid) is computed the
same way for all, so a faster run that finds a worse optimum shows up.

    python benchmarks/bench_kmeans.py                       # 50,000 x 512, k = 10 and 1,000
    python benchmarks/bench_kmeans.py --n 5000 --ks 10 100  # quick check
    python benchmarks/bench_kmeans.py --threads 2           # both libraries on 2 threads

Variants:
  faiss            deepclust.cluster.kmeans(backend="faiss")   (random init, as faiss does)
  sklearn          deepclust.cluster.kmeans(backend="sklearn") (sklearn KMeans, k-means++ init)
  sklearn-random   sklearn.cluster.KMeans(init="random")       (same init scheme as faiss)
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from deepclust.cluster import kmeans
from deepclust.cluster.kmeans import _inertia, assign_to_centroids
from deepclust.evaluate.metrics import cluster_acc


def gaussian_mixture(n: int, d: int, n_components: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=1.0, size=(n_components, d)).astype(np.float32)
    y = rng.integers(0, n_components, size=n)
    x = centers[y] + rng.normal(scale=1.0, size=(n, d)).astype(np.float32)
    return x, y


def run_variant(name: str, x: np.ndarray, k: int, n_init: int, max_iter: int,
                seed: int) -> tuple[float, float, np.ndarray]:
    start = time.perf_counter()
    if name == "faiss":
        labels = kmeans(x, k, n_init=n_init, max_iter=max_iter, seed=seed, backend="faiss").labels
    elif name == "sklearn":
        labels = kmeans(x, k, n_init=n_init, max_iter=max_iter, seed=seed, backend="sklearn").labels
    elif name == "sklearn-random":
        from sklearn.cluster import KMeans

        km = KMeans(k, init="random", n_init=n_init, max_iter=max_iter, random_state=seed).fit(x)
        labels = assign_to_centroids(x, km.cluster_centers_)
    else:
        raise ValueError(name)
    seconds = time.perf_counter() - start
    centroids = np.stack([x[labels == c].mean(0) if (labels == c).any() else np.zeros(x.shape[1], np.float32)
                          for c in range(k)]).astype(np.float32)
    return seconds, _inertia(x, labels, centroids), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--n-init", type=int, default=1)
    parser.add_argument("--max-iter", type=int, default=20)
    parser.add_argument("--variants", nargs="+", default=["faiss", "sklearn", "sklearn-random"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for faiss (OpenMP) and scikit-learn (BLAS/OpenMP); the same for both")
    args = parser.parse_args()

    import faiss
    import sklearn
    from threadpoolctl import threadpool_limits

    # Same thread budget for both libraries. On a shared, oversubscribed machine faiss's
    # OpenMP threads spin-wait for each other and can be >10x slower than with 1 thread.
    faiss.omp_set_num_threads(args.threads)
    threadpool_limits(args.threads)

    x, y = gaussian_mixture(args.n, args.d, 10, args.seed)
    print(f"# data {args.n} x {args.d} float32, 10-component Gaussian mixture; n_init={args.n_init}, "
          f"max_iter={args.max_iter}; threads={args.threads}; faiss {faiss.__version__}, "
          f"scikit-learn {sklearn.__version__}, "
          f"{platform.processor() or platform.machine()}")
    print("| k | variant | seconds | inertia (x1e6) | ACC vs mixture |")
    print("|---|---|---|---|---|")
    for k in args.ks:
        for variant in args.variants:
            seconds, inertia, labels = run_variant(variant, x, k, args.n_init, args.max_iter, args.seed)
            acc = f"{cluster_acc(y, labels):.3f}" if k == 10 else "-"
            print(f"| {k} | {variant} | {seconds:.1f} | {inertia / 1e6:.4f} | {acc} |", flush=True)


if __name__ == "__main__":
    main()
