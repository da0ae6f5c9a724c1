"""CLIP zero-shot classification (prompt ensembling) and cluster naming, on a tiny CLIP."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepclust.cli import main
from deepclust.errors import DeepclustError
from deepclust.models.pretrained import load_clip
from deepclust.naming import cluster_name_list, load_vocabulary, name_clusters
from deepclust.zeroshot import DEFAULT_TEMPLATES, text_classifier, zero_shot_classify
from pretrained_fixtures import CLASSES, colour_images_dir, tiny_clip_dir  # noqa: F401 (fixtures)


def _images(n=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


@pytest.fixture
def clip(tiny_clip_dir):
    return load_clip(f"hf:{tiny_clip_dir}")


def test_prompt_ensemble_is_renormalised_mean_of_normalised_text_embeddings(clip):
    names = ["cat", "dog", "red car"]
    templates = ["a photo of a {}.", "a blurry photo of the {}.", "a rendering of a {}."]
    weights = text_classifier(clip, names, templates)
    direct = []
    for name in names:
        t = torch.stack([clip.text_features([tpl.format(name)])[0] for tpl in templates])
        direct.append(F.normalize(F.normalize(t, dim=-1).mean(0), dim=0))
    torch.testing.assert_close(weights, torch.stack(direct), atol=1e-5, rtol=0)
    assert torch.allclose(weights.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_zero_shot_probabilities_follow_clip_formula(clip):
    images = _images()
    probs, pred = zero_shot_classify(clip, images, CLASSES, progress=False)
    assert probs.shape == (7, 3) and pred.shape == (7,)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(pred, probs.argmax(axis=1))
    # softmax(logit_scale * cos(image, class weight)) with CLIP's own logit scale.
    img = F.normalize(torch.from_numpy(clip.embed(images, pooling="cls")), dim=-1)
    logits = clip.logit_scale * img @ text_classifier(clip, CLASSES, DEFAULT_TEMPLATES).T
    np.testing.assert_allclose(probs, logits.softmax(-1).numpy(), atol=1e-5)


def test_zero_shot_rejects_bad_names_and_templates(clip):
    with pytest.raises(DeepclustError, match="at least 2"):
        zero_shot_classify(clip, _images(2), ["cat"], progress=False)
    with pytest.raises(DeepclustError, match="repeated"):
        zero_shot_classify(clip, _images(2), ["cat", "Cat"], progress=False)
    with pytest.raises(DeepclustError, match=r"\{\}"):
        zero_shot_classify(clip, _images(2), ["cat", "dog"], ["a photo"], progress=False)


def test_zeroshot_command_writes_predictions_and_accuracy(tmp_path, tiny_clip_dir, colour_images_dir, capsys):
    out = tmp_path / "zs"
    # Names given in another case than the folders, plus one class with no folder.
    code = main(["zeroshot", str(colour_images_dir), "--model", f"hf:{tiny_clip_dir}",
                 "--classes", "RED, Green,blue,cat", "--template", "a photo of a {}.",
                 "--out", str(out), "--quiet"])
    assert code == 0
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == 18 and {r["class"] for r in rows} <= {"RED", "Green", "blue", "cat"}
    assert all(0 < float(r["score"]) <= 1 for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())
    truth = [r["path"].split("/")[-2] for r in rows]
    expected = np.mean([r["class"].lower() == t for r, t in zip(rows, truth)])
    assert metrics["accuracy"] == pytest.approx(expected)
    assert metrics["n_evaluated"] == 18 and metrics["n_templates"] == 1
    assert "zero-shot accuracy" in capsys.readouterr().out


def test_zeroshot_command_builtin_class_list(tmp_path, tiny_clip_dir, colour_images_dir):
    out = tmp_path / "zs"
    assert main(["zeroshot", str(colour_images_dir), "--model", f"hf:{tiny_clip_dir}",
                 "--classes-file", "cifar10", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "accuracy" not in metrics  # no folder is a CIFAR-10 class
    assert sorted(metrics["unmatched_folders"]) == sorted(CLASSES)
    assert {r["class"] for r in csv.DictReader(open(out / "predictions.csv"))} <= set(load_vocabulary("cifar10"))


def test_builtin_vocabularies():
    assert load_vocabulary("cifar10") == ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                          "frog", "horse", "ship", "truck"]
    c100 = load_vocabulary("cifar100")
    assert len(c100) == 100 and c100[0] == "apple" and c100[-1] == "worm" and c100 == sorted(c100)
    assert len(load_vocabulary("common")) >= 300
    assert load_vocabulary("cat, dog") == ["cat", "dog"]
    with pytest.raises(DeepclustError, match="built-in"):
        load_vocabulary("no-such-vocabulary")


def test_name_clusters_uses_vocabulary_and_cluster_mean(clip, tmp_path):
    images = _images(9, seed=2)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, -1])
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("# animals\ncat\ndog\nhorse\n\nbird\nfrog\n")
    names = name_clusters(clip, images, labels, str(vocab_file), top_n=3, progress=False)
    assert sorted(names) == [0, 1, 2]  # -1 (unassigned) is not a cluster
    vocab = ["cat", "dog", "horse", "bird", "frog"]
    for pairs in names.values():
        assert len(pairs) == 3 and all(n in vocab for n, _ in pairs)
        scores = [s for _, s in pairs]
        assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    # Direct computation for cluster 1: mean of normalised image embeddings, re-normalised.
    emb = F.normalize(torch.from_numpy(clip.embed(images[3:6], pooling="cls")), dim=-1)
    mean = F.normalize(emb.mean(0), dim=0)
    probs = (clip.logit_scale * mean @ text_classifier(clip, vocab).T).softmax(-1)
    best = int(probs.argmax())
    assert names[1][0] == (vocab[best], pytest.approx(float(probs[best]), abs=1e-5))
    assert cluster_name_list(names, 4) == [names[0][0][0], names[1][0][0], names[2][0][0], ""]
