"""The method registry: names, hyper-parameter validation, Sobel channel count."""

import pytest

from deepclust.errors import DeepclustError
from deepclust.methods import METHODS, build_method, get_method_class, method_in_chans

from methods_helpers import tiny_backbone


def test_registry_names_and_classes():
    assert set(METHODS) >= {"deepcluster", "swav", "dino"}
    assert get_method_class("DINO").name == "dino"
    method = build_method("swav", tiny_backbone(), k=3, img_size=8, n_prototypes=5, hidden_dim=8, out_dim=4)
    assert method.name == "swav" and method.prototypes.n_prototypes == 5


def test_unknown_method_and_hyper_parameter_are_explained():
    with pytest.raises(DeepclustError, match="valid names are: deepcluster, swav, dino"):
        get_method_class("byol")
    with pytest.raises(DeepclustError, match=r"does not take \['n_protos'\].*n_prototypes"):
        build_method("swav", tiny_backbone(), k=3, img_size=8, n_protos=5)
    with pytest.raises(ValueError, match="out_dim"):
        build_method("dino", tiny_backbone(), k=3, img_size=8, out_dim="many")


def test_sobel_input_channels():
    assert method_in_chans("deepcluster", sobel=True) == 2
    assert method_in_chans("dino", augment={"sobel": True}) == 2
    assert method_in_chans("swav") == 3


def test_every_recipe_in_configs_builds_its_method():
    """The recipes are read by TrainConfig and every method_kwargs entry is accepted."""
    from pathlib import Path

    from deepclust.train.builder import build_method_from_config
    from deepclust.train.config import TrainConfig

    recipes = sorted(Path(__file__).resolve().parents[1].glob("configs/*_*.yaml"))
    names = {p.stem for p in recipes}
    assert {"digits_deepcluster", "digits_swav", "digits_dino"} <= names
    for path in recipes:
        cfg = TrainConfig.load(path)
        if cfg.method not in ("deepcluster", "swav", "dino"):
            continue      # other helpers' methods
        method = build_method_from_config(cfg)
        assert method.name == cfg.method, path.name
