"""Tests for deepclust.report: the HTML gallery (parsed back with html.parser), plots, stats."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from deepclust.errors import DataError
from deepclust.report import (
    confusion_matrix,
    hungarian_column_order,
    plot_cluster_sizes,
    plot_confusion,
    plot_embedding_2d,
    plot_training_curves,
    project_2d,
    summarize_clusters,
    write_report,
)
from deepclust.report.thumbnails import make_thumbnail, pick_thumbnails

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOSTILE_PATH = "<script>alert(1)</script>.png"
HOSTILE_CLASS = "&\"'<>"

# ---------------------------------------------------------------------------- a tiny DOM

VOID = {"img", "meta", "br", "hr", "input", "link"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str | None]
    children: list[Node] = field(default_factory=list)
    text_parts: list[str] = field(default_factory=list)

    def iter(self, tag: str | None = None):
        if tag is None or self.tag == tag:
            yield self
        for child in self.children:
            yield from child.iter(tag)

    def find_all(self, tag: str, cls: str | None = None) -> list[Node]:
        return [n for n in self.iter(tag) if cls is None or cls in (n.attrs.get("class") or "").split()]

    def by_id(self, element_id: str) -> Node | None:
        return next((n for n in self.iter() if n.attrs.get("id") == element_id), None)

    @property
    def text(self) -> str:
        return "".join(self.text_parts) + "".join(c.text for c in self.children)


class _TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>: malformed page"
        self.stack.pop()

    def handle_data(self, data):
        # Keep text in document order relative to children by wrapping it in a text node.
        text_node = Node("#text", {}, text_parts=[data])
        self.stack[-1].children.append(text_node)


def parse(page: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(page)
    builder.close()
    assert builder.stack == [builder.root], "unclosed elements in the page"
    return builder.root


def decode_data_uri(src: str) -> np.ndarray:
    assert src.startswith("data:image/png;base64,")
    png = base64.b64decode(src.split(",", 1)[1])
    assert png.startswith(PNG_MAGIC)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


# ---------------------------------------------------------------------------- data


def make_data(seed: int = 0):
    """30 images of 8x8 in 3 clusters of sizes 5, 15, 10 (ids 2, 0, 1), with known classes."""
    rng = np.random.default_rng(seed)
    labels_pred = np.array([0] * 15 + [1] * 10 + [2] * 5)
    rng.shuffle(labels_pred)
    images = rng.integers(0, 256, size=(30, 8, 8, 3), dtype=np.uint8)
    labels_true = labels_pred.copy()
    labels_true[np.flatnonzero(labels_pred == 0)[:3]] = 1  # cluster 0: 12/15 class 0
    labels_true[np.flatnonzero(labels_pred == 1)[:1]] = -1  # one unknown label in cluster 1
    embeddings = rng.normal(size=(30, 5)).astype(np.float32) + labels_pred[:, None] * 3.0
    paths = [f"img/{i:03d}.png" for i in range(30)]
    return images, labels_pred, labels_true, embeddings, paths


def cluster_sections(root: Node) -> list[Node]:
    return root.find_all("section", "cluster")


def thumbs_of(section: Node) -> list[Node]:
    return [img for div in section.find_all("div", "thumbs") for img in div.find_all("img")]


# ---------------------------------------------------------------------------- the page


def test_report_structure_with_labels_and_embeddings(tmp_path):
    images, labels_pred, labels_true, embeddings, paths = make_data()
    log = tmp_path / "log.csv"
    log.write_text("epoch,step,loss\n0,1,2.0\n0,2,1.5\n")
    out = write_report(
        tmp_path / "r", images=images, labels_pred=labels_pred, paths=paths, embeddings=embeddings,
        labels_true=labels_true, class_names=["zero", "one", "two"],
        metrics={"acc": 0.9, "nmi": 0.8123456, "ari": 0.7}, max_thumbs_per_cluster=8,
        embedding_method="pca", skipped=[("bad.jpg", "cannot decode")], training_log=log,
    )
    assert out == tmp_path / "r" / "report.html"
    root = parse(out.read_text(encoding="utf-8"))

    sections = cluster_sections(root)
    assert [s.attrs["data-cluster"] for s in sections] == ["0", "1", "2"]  # largest first
    assert [int(s.attrs["data-size"]) for s in sections] == [15, 10, 5]
    assert float(sections[0].attrs["data-purity"]) == pytest.approx(12 / 15)
    assert float(sections[1].attrs["data-purity"]) == pytest.approx(1.0)  # 9 known, all class 1
    assert sections[0].find_all("b", "majority")[0].text == "zero"
    assert [len(thumbs_of(s)) for s in sections] == [8, 8, 5]

    # Every image is embedded; nothing points outside the page.
    all_imgs = root.find_all("img")
    assert all_imgs and all(img.attrs["src"].startswith("data:image/png;base64,") for img in all_imgs)
    assert not root.find_all("link") and not root.find_all("script")

    for element_id in ("plot-sizes", "plot-confusion", "plot-map-clusters", "plot-map-classes", "plot-training",
                       "metrics"):
        assert root.by_id(element_id) is not None, element_id
    metric_rows = root.by_id("metrics").find_all("tr")[1:]
    metric_cells = {r.find_all("th")[0].text: r.find_all("td")[0].text for r in metric_rows}
    assert metric_cells == {"acc": "0.9000", "nmi": "0.8123", "ari": "0.7000"}
    skipped = root.by_id("skipped")
    assert "1 skipped" in skipped.find_all("summary")[0].text
    assert [td.text for td in skipped.find_all("td")] == ["bad.jpg", "cannot decode"]


def test_thumbnails_are_the_right_images_centre_first(tmp_path):
    images, labels_pred, _, embeddings, paths = make_data()
    members = np.flatnonzero(labels_pred == 0)
    centre = embeddings[members].mean(axis=0)
    nearest = members[np.argmin(((embeddings[members] - centre) ** 2).sum(axis=1))]
    out = write_report(
        tmp_path, images=images, labels_pred=labels_pred, paths=paths, embeddings=embeddings,
        max_thumbs_per_cluster=4, embedding_method="pca",
    )
    section = cluster_sections(parse(out.read_text()))[0]
    first = thumbs_of(section)[0]
    assert first.attrs["title"] == paths[nearest]
    assert first.attrs["alt"] == f"{nearest:03d}.png"
    pixels = decode_data_uri(first.attrs["src"])
    assert pixels.shape == (64, 64, 3)
    np.testing.assert_array_equal(pixels[::8, ::8], images[nearest])  # nearest-neighbour upscale


def test_report_without_labels_or_embeddings(tmp_path):
    images, labels_pred, _, _, paths = make_data()
    out = write_report(tmp_path, images=images, labels_pred=labels_pred, paths=paths, max_thumbs_per_cluster=3)
    root = parse(out.read_text())
    assert root.by_id("plot-confusion") is None
    assert root.by_id("plot-map-clusters") is None and root.by_id("plot-map-classes") is None
    assert root.by_id("plot-sizes") is not None
    assert root.by_id("plot-training") is None and root.by_id("metrics") is None and root.by_id("skipped") is None
    sections = cluster_sections(root)
    assert all("data-purity" not in s.attrs for s in sections)
    # Without embeddings the first members (in index order) are shown.
    first_members = np.flatnonzero(labels_pred == 0)[:3]
    assert [img.attrs["title"] for img in thumbs_of(sections[0])] == [paths[i] for i in first_members]
    assert "showing 3 of 15" in sections[0].text


def test_user_strings_are_escaped(tmp_path):
    images, labels_pred, labels_true, _, paths = make_data()
    target = int(np.flatnonzero(labels_pred == 2)[0])
    paths[target] = HOSTILE_PATH
    labels_true[labels_pred == 2] = 2
    out = write_report(
        tmp_path, images=images, labels_pred=labels_pred, paths=paths, labels_true=labels_true,
        class_names=["a", "b", HOSTILE_CLASS], title="<script>alert('t')</script>",
        cluster_names={2: [("<script>x</script>", 0.5)]}, metrics={"<i>m</i>": 1.0},
        skipped=[(HOSTILE_PATH, "reason with <b>tags</b> & \"quotes\"")],
        cluster_extras={2: [("<script>cap</script>", np.zeros((4, 4, 3), np.uint8))]},
    )
    page = out.read_text()
    assert "<script" not in page.lower()
    assert "<b>tags</b>" not in page and "<i>m</i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in page
    assert "&amp;&quot;&#x27;&lt;&gt;" in page  # class name, quotes included

    root = parse(page)  # also proves the page is well formed despite the hostile strings
    assert root.find_all("title")[0].text == "<script>alert('t')</script>"
    section = root.by_id("cluster-2")
    assert [img.attrs["title"] for img in thumbs_of(section)][0] == HOSTILE_PATH
    assert section.find_all("b", "majority")[0].text == HOSTILE_CLASS
    assert section.find_all("ul", "names")[0].find_all("li")[0].text.startswith("<script>x</script>")
    assert section.find_all("figcaption")[0].text == "<script>cap</script>"


def test_extras_caps_and_validation(tmp_path):
    images, labels_pred, _, _, paths = make_data()
    overlay = np.full((10, 12, 3), 200, np.uint8)
    out = write_report(
        tmp_path, images=images, labels_pred=labels_pred, paths=paths, max_thumbs_per_cluster=32,
        max_total_thumbs=12, cluster_extras={1: [("attention", overlay), ("png", make_png())]},
    )
    root = parse(out.read_text())
    extras = root.by_id("cluster-1").find_all("div", "extras")[0]
    shown = [decode_data_uri(img.attrs["src"]) for img in extras.find_all("img")]
    np.testing.assert_array_equal(shown[0], overlay)
    assert shown[1].shape == (3, 5, 3)
    # 12 thumbnails over 3 clusters -> at most 4 per cluster.
    assert [len(thumbs_of(s)) for s in cluster_sections(root)] == [4, 4, 4]

    with pytest.raises(DataError, match="PNG"):
        write_report(tmp_path, images=images, labels_pred=labels_pred, paths=paths,
                     cluster_extras={0: [("x", b"GIF89a")]})
    with pytest.raises(DataError, match="paths"):
        write_report(tmp_path, images=images, labels_pred=labels_pred, paths=paths[:-1])
    with pytest.raises(DataError, match="embeddings"):
        write_report(tmp_path, images=images, labels_pred=labels_pred, paths=paths, embeddings=np.zeros((3, 2)))
    with pytest.raises(DataError, match="labels_pred"):
        write_report(tmp_path, images=images, labels_pred=labels_pred.astype(float), paths=paths)


def make_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (5, 3), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------- thumbnails and stats


def test_make_thumbnail_scales_small_up_and_large_down():
    small = np.arange(64, dtype=np.uint8).reshape(8, 8)
    up = make_thumbnail(small, 64)
    assert up.shape == (64, 64, 3)
    np.testing.assert_array_equal(up[:, :, 0], np.kron(small, np.ones((8, 8), np.uint8)))
    down = make_thumbnail(np.zeros((200, 100, 3), np.uint8), 64)
    assert down.shape == (64, 32, 3)


def test_pick_thumbnails_orders_by_distance_to_centroid():
    emb = np.array([[0.0], [10.0], [4.0], [6.0], [5.0]])  # mean of all = 5
    assert pick_thumbnails(np.arange(5), emb, 3).tolist() == [4, 2, 3]
    assert pick_thumbnails(np.array([1, 3]), None, 5).tolist() == [1, 3]


def test_summaries_confusion_and_hungarian_order():
    labels_pred = np.array([5, 5, 5, 7, 7, 9])
    labels_true = np.array([1, 1, 0, 0, -1, -1])
    summaries = summarize_clusters(labels_pred, labels_true)
    assert [(s.cluster, s.size, s.majority_class, s.n_labelled) for s in summaries] == [
        (5, 3, 1, 3), (7, 2, 0, 1), (9, 1, None, 0)]
    assert summaries[0].purity == pytest.approx(2 / 3) and summaries[2].purity is None

    cm, rows, cols = confusion_matrix(labels_true, labels_pred)
    assert rows.tolist() == [0, 1] and cols.tolist() == [5, 7, 9]
    np.testing.assert_array_equal(cm, [[1, 1, 0], [2, 0, 0]])
    # Hungarian: class 0 <-> cluster 7, class 1 <-> cluster 5, then the unmatched cluster.
    assert cols[hungarian_column_order(cm)].tolist() == [7, 5, 9]


# ---------------------------------------------------------------------------- plots


def test_plots_return_png_and_write_files(tmp_path):
    rng = np.random.default_rng(0)
    emb = np.concatenate([rng.normal(0, 1, (20, 60)), rng.normal(8, 1, (20, 60))]).astype(np.float32)
    labels = np.repeat([0, 1], 20)
    png = plot_embedding_2d(emb, labels, tmp_path / "map.png", method="tsne", label_names=["a", "b"])
    assert png.startswith(PNG_MAGIC) and (tmp_path / "map.png").read_bytes() == png
    assert plot_confusion(np.eye(3, dtype=int), list("abc"), list("xyz")).startswith(PNG_MAGIC)
    assert plot_cluster_sizes([5, 3, 1]).startswith(PNG_MAGIC)
    with pytest.raises(DataError, match="does not match"):
        plot_confusion(np.eye(3), ["a"], ["x", "y", "z"])


def test_project_2d_subsamples_deterministically_and_separates_groups():
    rng = np.random.default_rng(1)
    emb = np.concatenate([rng.normal(0, 1, (60, 8)), rng.normal(10, 1, (60, 8))])
    coords, index = project_2d(emb, method="pca", max_points=50, seed=3)
    coords_again, index_again = project_2d(emb, method="pca", max_points=50, seed=3)
    assert coords.shape == (50, 2) and index.shape == (50,)
    assert np.all(np.diff(index) > 0)
    np.testing.assert_array_equal(index, index_again)
    np.testing.assert_allclose(coords, coords_again)
    group = index >= 60
    # The two well-separated groups must land apart on the first axis.
    assert abs(coords[group, 0].mean() - coords[~group, 0].mean()) > 5 * coords[group, 0].std()
    with pytest.raises(DataError, match="NaN"):
        project_2d(np.full((5, 3), np.nan))


def test_plot_training_curves(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text(
        "epoch,step,loss,lr,knn_acc,note\n"
        "0,1,2.5,0.1,,warmup\n"
        "0,2,2.0,0.1,,\n"
        "1,3,1.5,0.05,0.4,\n"
        "1,4,1.2,0.05,,\n"
    )
    out = plot_training_curves(log, tmp_path / "plots" / "curves.png")
    assert out.read_bytes().startswith(PNG_MAGIC)
    image = Image.open(out)
    # loss, lr, knn_acc -> three panels side by side (4.2 in each at 100 dpi); the text column is dropped.
    assert image.size == (1260, 300)
    with pytest.raises(DataError, match="does not exist"):
        plot_training_curves(tmp_path / "missing.csv", tmp_path / "x.png")
    (tmp_path / "only_x.csv").write_text("epoch,step\n0,1\n")
    with pytest.raises(DataError, match="no numeric column"):
        plot_training_curves(tmp_path / "only_x.csv", tmp_path / "x.png")


def test_auto_map_uses_umap_when_installed(monkeypatch):
    """umap-learn is optional (not installed here): a stand-in module checks the dispatch."""
    import importlib.machinery
    import sys
    import types

    calls = {}

    class FakeUMAP:
        def __init__(self, **kwargs):
            calls.update(kwargs)

        def fit_transform(self, x):
            calls["shape"] = x.shape
            return x[:, :2] * 2.0

    fake = types.ModuleType("umap")
    fake.__spec__ = importlib.machinery.ModuleSpec("umap", None)
    fake.UMAP = FakeUMAP
    monkeypatch.setitem(sys.modules, "umap", fake)
    x = np.random.default_rng(0).normal(size=(30, 80)).astype(np.float32)
    coords, index = project_2d(x, method="auto", seed=5)
    assert calls["random_state"] == 5 and calls["n_components"] == 2
    assert calls["shape"] == (30, 30)  # PCA to min(50, n) dimensions first
    assert coords.shape == (30, 2) and index.tolist() == list(range(30))
