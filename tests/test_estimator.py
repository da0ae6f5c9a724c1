"""DeepClusterer: fit / predict / transform shapes, label consistency, input validation."""

import numpy as np
import pytest
import torch

from deepclust.errors import DataError, DeepclustError
from deepclust.estimator import DeepClusterer, check_images
from methods_helpers import pattern_images
from pretrained_fixtures import tiny_dinov2_dir  # noqa: F401 (fixture)

torch.set_num_threads(1)

TINY = {"backbone": "small_cnn", "backbone_kwargs": {"widths": [8, 16], "convs_per_stage": 1},
        "epochs": 2, "batch_size": 16, "lr": 0.01, "warmup_epochs": 0, "knn_every": 0,
        "monitor_samples": 48, "num_workers": 0, "collapse_check": False,
        "method_kwargs": {"out_dim": 16, "hidden_dim": 16, "bottleneck_dim": 8,
                          "augment": {"n_local": 0, "global_scale": [0.6, 1.0], "flip": False,
                                      "color_jitter": None, "grayscale_p": 0.0, "blur_p": 0.0,
                                      "solarize_p": 0.0, "mean": "half"}}}


def test_fit_predict_transform_shapes_and_consistency(tmp_path):
    images, labels = pattern_images(12)
    gray = images[..., 0]                                 # (N, 8, 8): grey input is accepted
    model = DeepClusterer(method="dino", k=3, config=TINY, device="cpu", verbose=False,
                          out_dir=tmp_path / "run")
    assert model.fit(gray) is model
    assert model.labels_.shape == (36,) and set(np.unique(model.labels_)) <= {0, 1, 2}
    assert len(np.unique(model.labels_)) > 1
    assert model.cluster_centers_.shape == (3, model.embeddings_.shape[1])
    emb = model.transform(images)
    assert emb.shape == model.embeddings_.shape
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.allclose(emb, model.embeddings_, atol=1e-5)       # grey == replicated RGB
    assert np.array_equal(model.predict(images), model.labels_)
    assert (tmp_path / "run" / "log.csv").is_file()
    # float input in [0, 1] is the same image set
    assert np.array_equal(model.predict(images.astype(np.float32) / 255.0), model.labels_)


def test_fit_predict_without_out_dir_leaves_nothing_behind():
    images, _ = pattern_images(6)
    model = DeepClusterer(method="swav", k=3, config={**TINY, "method_kwargs": {
        "n_prototypes": 6, "hidden_dim": 16, "out_dim": 8, "augment": TINY["method_kwargs"]["augment"]}},
        device="cpu", verbose=False)
    labels = model.fit_predict(images)
    assert labels.shape == (18,) and model.run_dir_ is None


def test_input_validation_messages():
    with pytest.raises(DataError, match="square"):
        check_images(np.zeros((2, 8, 6, 3), np.uint8))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        check_images(np.full((2, 8, 8), 3.0))
    with pytest.raises(DataError, match="shape"):
        check_images(np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="numpy array"):
        check_images(42)
    with pytest.raises(DeepclustError, match="not fitted"):
        DeepClusterer().predict(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(DataError, match="k=5"):
        DeepClusterer(k=5, config=TINY, device="cpu", verbose=False).fit(np.zeros((3, 8, 8), np.uint8))


def test_whitener_decorrelates_training_embeddings():
    from deepclust.estimator import Whitener

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)) + 3).astype(np.float32)
    w = Whitener.fit(x, 3)
    white = (x - w.mean) @ w.projection
    assert np.allclose(np.cov(white, rowvar=False), np.eye(3), atol=1e-3)
    assert np.allclose(np.linalg.norm(w(x), axis=1), 1.0, atol=1e-5)


def test_is_a_scikit_learn_estimator_and_refuses_another_image_size(tmp_path):
    from sklearn.base import clone

    model = DeepClusterer(method="dino", k=3, config=TINY, device="cpu", verbose=False, n_init=3,
                          method_kwargs={"out_dim": 8})
    copy = clone(model)
    assert copy.get_params() == model.get_params() and copy is not model
    assert copy.get_params()["method_kwargs"] == {"out_dim": 8}
    images, _ = pattern_images(6)
    labels = model.fit_predict(images)
    assert labels.shape == (18,) and model.clustering_.k == 3
    assert model.config_.method_kwargs["out_dim"] == 8
    with pytest.raises(DataError, match="fitted on 8x8 images; got 16x16"):
        model.predict(np.repeat(np.repeat(images, 2, axis=1), 2, axis=2))


def test_model_argument_clusters_with_an_existing_encoder_without_training():
    images, labels = pattern_images(8)
    model = DeepClusterer(model="raw", k=3, verbose=False, device="cpu").fit(images)
    assert model.method_ is None and model.config_ is None
    assert not model.clustering_.spherical  # pixels: Euclidean k-means, as `deepclust cluster`
    from deepclust.cluster import cluster_embeddings
    direct = cluster_embeddings(images.reshape(len(images), -1).astype(np.float32) / 255, 3, spherical=False)
    np.testing.assert_array_equal(model.labels_, direct.labels)
    np.testing.assert_array_equal(model.predict(images), model.labels_)


def test_estimator_init_continues_from_a_pretrained_tower(tiny_dinov2_dir):
    """``init=`` (issue 14) as ``deepclust train --init``: SPEC's architecture and the adaptation
    defaults, overridable by the estimator's own keywords."""
    torch.set_num_threads(1)
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    est = DeepClusterer("dino", k=3, init=f"hf:{tiny_dinov2_dir}", epochs=1, batch_size=8, device="cpu",
                        verbose=False, layer_decay=0.8, init_head_warmup_steps=1,
                        config={"knn_every": 0, "num_workers": 0, "collapse_check": False},
                        method_kwargs={"out_dim": 16, "hidden_dim": 16, "bottleneck_dim": 8,
                                       "augment": {"n_local": 0}}).fit(images)
    cfg = est.config_
    assert est.labels_.shape == (16,) and cfg.init == f"hf:{tiny_dinov2_dir}"
    assert cfg.backbone == "vit" and cfg.backbone_kwargs["patch_size"] == 8
    assert (cfg.layer_decay, cfg.init_lr_scale, cfg.init_head_warmup_steps) == (0.8, 0.1, 1)
    assert est.get_params()["init"] == f"hf:{tiny_dinov2_dir}"
