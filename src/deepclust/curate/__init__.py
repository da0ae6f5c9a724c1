"""Data curation: exact and near duplicates, test-set decontamination, retrieval around a
seed set, and balanced sampling with hierarchical k-means (see docs/curation.md).

* `curate(source, out_dir=..., ...)` -> `CurationResult`: the library entry behind
  ``deepclust curate`` (`deepclust.curate.api`);
* the pieces, usable on their own arrays: `exact_groups`, `near_groups` (`dedup`),
  `contaminated` (`decontaminate`), `retrieve` (`retrieval`), `hierarchical_kmeans`,
  `hierarchical_sample` (`sampling`), `build_index` / `search` (`search`: faiss, exact or IVF).
"""

from deepclust.curate.api import DEFAULT_FEATURES, DEFAULT_THRESHOLDS, CurationResult, Removal, curate
from deepclust.curate.decontaminate import Matches, contaminated
from deepclust.curate.dedup import DuplicateGroup, content_hashes, exact_groups, near_groups
from deepclust.curate.retrieval import retrieve
from deepclust.curate.sampling import Hierarchy, hierarchical_kmeans, hierarchical_sample, random_sample
from deepclust.curate.search import build_index, search

__all__ = [
    "curate", "CurationResult", "Removal", "DEFAULT_FEATURES", "DEFAULT_THRESHOLDS",
    "DuplicateGroup", "content_hashes", "exact_groups", "near_groups",
    "Matches", "contaminated", "retrieve",
    "Hierarchy", "hierarchical_kmeans", "hierarchical_sample", "random_sample",
    "build_index", "search",
]
