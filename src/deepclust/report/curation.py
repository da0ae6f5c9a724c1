"""`write_curation_report`: ``curation.html``, one self-contained page of a curation.

Sections: the summary (counts per removal kind, threshold, features, the faiss index of
each search), the cluster balance before and after sampling (one bar pair per top-level
cluster, when a target size was given), and the duplicate groups side by side (the kept
image first, outlined, each thumbnail captioned with its file name and its cosine
similarity to the kept one). Thumbnails are PNG data URIs (`deepclust.report.thumbnails`);
every string from the data goes through `html.escape`. Each group is a
``<section class="group">`` with ``data-kind`` and ``data-size`` attributes.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from deepclust.core.io import atomic_write_text
from deepclust.report.thumbnails import thumbnail_data_uri

#: (kind, members with the kept one first, similarity of each to the kept one)
Group = tuple[str, Sequence[int], Sequence[float]]

_CSS = """
body { margin:0; padding:24px 32px; font:14px/1.45 system-ui,sans-serif; color:#1d2330; background:#f6f7f9; }
h1 { font-size:24px; margin:0 0 16px; } h2 { font-size:18px; margin:0 0 8px; }
section { background:#fff; border:1px solid #dde2ea; border-radius:8px; padding:12px 18px; margin:0 0 14px; }
table { border-collapse:collapse; } th, td { text-align:left; padding:2px 10px; border-bottom:1px solid #dde2ea; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
.members { display:flex; flex-wrap:wrap; gap:8px; }
figure { margin:0; width:104px; font-size:11px; color:#5b6474; overflow-wrap:anywhere; }
figure img { width:96px; height:96px; object-fit:contain; image-rendering:pixelated; background:#000; }
figure.kept img { outline:3px solid #2f6fdb; }
.bar { display:inline-block; height:10px; vertical-align:middle; }
.before { background:#9aa4b5; } .after { background:#2f6fdb; }
.muted { color:#5b6474; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _summary_html(summary: Mapping[str, Any]) -> str:
    rows = [("images", summary.get("n_images")), ("kept", summary.get("n_kept")),
            ("removed", summary.get("n_removed"))]
    rows += [(f"removed: {k}", v) for k, v in dict(summary.get("removed", {})).items()]
    rows += [("features", summary.get("features")), ("threshold (cosine)", summary.get("threshold"))]
    rows += [(f"index: {k}", v) for k, v in dict(summary.get("index", {})).items()]
    cells = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    return f'<section id="summary"><h2>Summary</h2><table>{cells}</table></section>'


def _balance_html(balance: Mapping[str, Sequence[int]] | None) -> str:
    if not balance:
        return ""
    before, after = list(balance["before"]), list(balance["after"])
    scale = 300.0 / max(1, max(before))
    scale_after = 300.0 / max(1, max(after))
    rows = []
    for c in sorted(range(len(before)), key=lambda c: (-before[c], c)):
        rows.append(
            f'<tr data-cluster="{c}" data-before="{before[c]}" data-after="{after[c]}"><td class="num">{c}</td>'
            f'<td class="num">{before[c]}</td><td><span class="bar before" style="width:{before[c] * scale:.0f}px">'
            f'</span></td><td class="num">{after[c]}</td><td><span class="bar after" '
            f'style="width:{after[c] * scale_after:.0f}px"></span></td></tr>')
    return ('<section id="balance"><h2>Cluster balance (top-level clusters of the hierarchical k-means)</h2>'
            '<p class="muted">Bars are scaled to the largest cluster of each column.</p>'
            '<table><tr><th>cluster</th><th>before</th><th></th><th>after sampling</th><th></th></tr>'
            + "".join(rows) + "</table></section>")


def _group_html(number: int, group: Group, images: np.ndarray, paths: Sequence[str], thumb: int,
                max_members: int) -> str:
    kind, members, sims = group
    figures = []
    for j, (m, s) in enumerate(zip(members[:max_members], sims[:max_members])):
        name = os.path.basename(paths[m]) or paths[m]
        label = "kept" if j == 0 else f"cos {s:.3f}"
        figures.append(
            f'<figure class="{"kept" if j == 0 else "member"}" title="{_esc(paths[m])}">'
            f'<img src="{thumbnail_data_uri(np.asarray(images[m]), thumb)}" alt="{_esc(name)}">'
            f"<figcaption>{_esc(label)}<br>{_esc(name)}</figcaption></figure>")
    hidden = len(members) - len(figures)
    more = f'<p class="muted">and {hidden} more (duplicates.csv)</p>' if hidden > 0 else ""
    return (f'<section class="group" data-kind="{_esc(kind)}" data-size="{len(members)}">'
            f"<h2>group {number} <span class=\"muted\">{_esc(kind)}, {len(members)} images</span></h2>"
            f'<div class="members">{"".join(figures)}</div>{more}</section>')


def write_curation_report(
    out_dir: str | Path,
    *,
    images: np.ndarray,
    paths: Sequence[str],
    groups: Sequence[Group],
    summary: Mapping[str, Any],
    balance: Mapping[str, Sequence[int]] | None = None,
    max_groups: int = 200,
    max_members: int = 24,
    thumb_size: int = 96,
    title: str = "deepclust curation",
    progress: bool = False,
) -> Path:
    """Write ``out_dir/curation.html`` (see the module doc); returns its path.

    Args:
        images: ``(N, S, S, 3)`` uint8 (a memmap is fine: only shown images are read).
        groups: ``(kind, members, similarities)`` per duplicate group, kept member first.
        balance: ``{"before": sizes, "after": sizes}`` of the top-level clusters, or None.
        max_groups: groups shown at most (largest first); the rest are counted.
        max_members: thumbnails per group at most (the kept one and the first others).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    order = sorted(range(len(groups)), key=lambda g: (-len(groups[g][1]), g))
    shown = order[:max_groups]
    body = [f"<h1>{_esc(title)}</h1>", _summary_html(summary), _balance_html(balance),
            f'<h2 id="groups">Duplicate groups ({len(groups)})</h2>']
    for g in tqdm(shown, desc="report groups", disable=not progress):
        body.append(_group_html(g, groups[g], images, paths, thumb_size, max_members))
    if len(order) > len(shown):
        body.append(f'<p class="muted">{len(order) - len(shown)} more groups in duplicates.csv</p>')
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")
    return atomic_write_text(out / "curation.html", page)


__all__ = ["write_curation_report"]
