"""The files of a curation, all through the atomic writer (`deepclust.core.io`).

* ``keep.csv`` (``path``): the images kept, in store order;
* ``removed.csv`` (``path,kind,reason,other,similarity``): every image not kept, why
  (``kind``: exact|near|contaminates|not_retrieved|not_sampled; ``reason`` in words,
  e.g. "near duplicate of a.png (0.9731)"), the image it duplicates or contaminates, and
  the cosine similarity (empty when it does not apply);
* ``duplicates.csv`` (``group,path,kind,similarity``): one row per member of each
  duplicate group, the kept image first (similarity to the kept image; 1 for it and for
  exact groups);
* ``curation.html``: the report page (`deepclust.report.curation`);
* ``skipped.csv`` (``path,reason``): files of SOURCE that could not be read;
* ``summary.json``, written last: counts, threshold, features, the faiss index of each search.

CSV fields are quoted by the ``csv`` module, so any file name (comma, quote, newline)
round-trips through ``csv.reader``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepclust.core.io import atomic_write_csv, atomic_write_json
from deepclust.errors import DeepclustError


def _similarity(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def write_curation(result: Any, store: Any, *, report: bool = True, progress: bool = True) -> dict[str, Path]:
    """Write the files above for a `CurationResult` into ``result.out_dir``; returns name -> path."""
    out = Path(result.out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeepclustError(f"cannot create the output folder {out}: {exc}") from exc
    paths = result.paths
    files = {
        "keep": atomic_write_csv(out / "keep.csv", ["path"], ([paths[i]] for i in result.keep)),
        "removed": atomic_write_csv(
            out / "removed.csv", ["path", "kind", "reason", "other", "similarity"],
            ([paths[i], r.kind, r.reason, r.other, _similarity(r.similarity)]
             for i, r in sorted(result.removed.items()))),
        "duplicates": atomic_write_csv(
            out / "duplicates.csv", ["group", "path", "kind", "similarity"],
            ([g, paths[m], group.kind, _similarity(s)] for g, group in enumerate(result.groups)
             for m, s in zip(group.members, group.similarity))),
        "skipped": atomic_write_csv(out / "skipped.csv", ["path", "reason"], list(store.skipped)),
    }
    if report:
        from deepclust.report.curation import write_curation_report

        groups = [(g.kind, list(g.members), list(g.similarity)) for g in result.groups]
        files["report"] = write_curation_report(
            out, images=store.images, paths=paths, groups=groups, summary=result.summary,
            balance=result.balance, progress=progress)
    files["summary"] = atomic_write_json(out / "summary.json", {**result.summary,
                                                                "files": {k: p.name for k, p in files.items()}})
    return files


__all__ = ["write_curation"]
