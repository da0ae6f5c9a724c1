#!/usr/bin/env bash
# Render a deepclust report.html to a PNG with headless Chromium, to check by eye that the
# page renders (thumbnails, plots, layout) without opening a browser.
#
# Usage:
#   scripts/screenshot_report.sh [REPORT_HTML] [OUT_PNG] [WIDTHxHEIGHT]
#
#   REPORT_HTML  an existing report to render. If omitted, a demo report is generated first
#                from scikit-learn's 8x8 digits clustered with sklearn KMeans (k=10) into
#                ./report-demo/report.html (with a hostile file name and class name, to
#                see escaping at work).
#   OUT_PNG      where to write the screenshot (default: report-demo/screenshot.png).
#   WIDTHxHEIGHT window size (default 1280x2000); make it taller to see more clusters.
#
# Needs: the deepclust package (activate .venv) and Chromium
#   (Debian: apt-get update && apt-get install -y chromium).
# Chromium runs with no network use and a throw-away profile directory.
set -euo pipefail

report="${1:-}"
out_png="${2:-report-demo/screenshot.png}"
size="${3:-1280x2000}"

chrome="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [[ -z "$chrome" ]]; then
    echo "error: Chromium not found; install it (apt-get install -y chromium) and retry" >&2
    exit 2
fi

# Use this checkout's sources even when the package is not pip-installed.
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$repo_root/src${PYTHONPATH:+:$PYTHONPATH}"

if [[ -z "$report" ]]; then
    report="report-demo/report.html"
    python - "$(dirname "$report")" <<'PY'
import sys

import numpy as np
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits

from deepclust.report import write_report

digits = load_digits()
# 0..16 grey levels -> 0..255 RGB, the project's image contract.
images = np.repeat((digits.images * (255.0 / 16.0)).round().astype(np.uint8)[..., None], 3, axis=3)
features = digits.data.astype(np.float32)
labels = KMeans(n_clusters=10, n_init=4, random_state=0).fit_predict(features)
paths = [f"digits/{digits.target[i]}/{i:04d}.png" for i in range(len(images))]
paths[0] = "<script>alert(1)</script>.png"  # must show up as text
class_names = [str(n) for n in digits.target_names]
class_names[3] = "three &\"'<>"
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

path = write_report(
    sys.argv[1], images=images, labels_pred=labels, paths=paths, embeddings=features,
    labels_true=digits.target, class_names=class_names, title="digits demo <k=10>",
    metrics={"nmi": normalized_mutual_info_score(digits.target, labels),
             "ari": adjusted_rand_score(digits.target, labels)},
    cluster_names={int(labels[0]): [("zero", 0.91), ("<b>oval</b>", 0.07)]},
    skipped=[("broken.jpg", "cannot decode: truncated file"), ("empty.png", "zero bytes")],
)
print(f"wrote {path}")
PY
fi

mkdir -p "$(dirname "$out_png")"
abs_report="$(cd "$(dirname "$report")" && pwd)/$(basename "$report")"
abs_png="$(cd "$(dirname "$out_png")" && pwd)/$(basename "$out_png")"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
"$chrome" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$profile" --screenshot="$abs_png" \
    --window-size="${size/x/,}" "file://$abs_report" 2>/dev/null
echo "screenshot: $abs_png"
