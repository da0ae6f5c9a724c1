"""The method registry: names, typed hyper-parameter configs (unknown keys, wrong types),
Sobel channel count, every shipped recipe builds."""

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
    with pytest.raises(DeepclustError, match=r"does not take \['n_protos'\]; valid keys: n_prototypes, hidden_dim"):
        build_method("swav", tiny_backbone(), k=3, img_size=8, n_protos=5)
    with pytest.raises(ValueError, match=r"out_dim must be int or 'k', got 'many' \(str\)"):
        build_method("dino", tiny_backbone(), k=3, img_size=8, out_dim="many")


@pytest.mark.parametrize("method, key, value, expected", [
    ("dino", "out_dim", "ten", "int or 'k'"),
    ("dino", "teacher_temp", "hot", "float"),
    ("dino", "norm_last_layer", 1, "bool"),
    ("swav", "crops_for_assign", "01", "a list of int"),
    ("deepcluster", "sampling", "random", "'uniform' or 'weighted' or 'shuffle'"),
    ("deepcluster", "n_clusters", 2.5, "int or null"),
])
def test_wrong_types_name_the_key_the_type_and_the_value(method, key, value, expected):
    from deepclust.methods import method_config

    with pytest.raises(DeepclustError, match=f"{key} must be {expected}, got {value!r}".replace("(", r"\(")
                       .replace(")", r"\)").replace("[", r"\[")):
        method_config(method, {key: value})


def test_typed_configs_coerce_yaml_values_and_keep_defaults():
    from deepclust.methods import DINOConfig, SwAVConfig, method_config

    cfg = method_config("dino", {"teacher_temp": 1, "augment": {"n_local": 2}})
    assert isinstance(cfg, DINOConfig) and cfg.teacher_temp == 1.0 and isinstance(cfg.teacher_temp, float)
    assert cfg.out_dim == 65536 and cfg.augment == {"n_local": 2}
    assert method_config("swav", {"crops_for_assign": [0]}) == SwAVConfig(crops_for_assign=(0,))


def test_training_config_checks_types_and_method_kwargs():
    from deepclust.train.config import TrainConfig

    with pytest.raises(DeepclustError, match=r"training config: epochs must be int, got 'ten' \(str\)"):
        TrainConfig.from_dict({"epochs": "ten"})
    with pytest.raises(DeepclustError, match=r"lr must be float, got None"):
        TrainConfig(lr=None)
    with pytest.raises(DeepclustError, match=r"method 'dino' does not take \['outdim'\]; valid keys: out_dim"):
        TrainConfig(method="dino", method_kwargs={"outdim": 3})
    with pytest.raises(DeepclustError, match="out_dim must be"):
        TrainConfig.load("digits_dino", sets=["method_kwargs.out_dim=ten"])
    assert TrainConfig(warmup_epochs=2).warmup_epochs == 2.0


def test_sobel_input_channels():
    assert method_in_chans("deepcluster", sobel=True) == 2
    assert method_in_chans("dino", augment={"sobel": True}) == 2
    assert method_in_chans("swav") == 3


def test_every_recipe_in_configs_builds_its_method():
    """The recipes are read by TrainConfig and every method_kwargs entry is accepted."""
    from pathlib import Path

    from deepclust.train.builder import build_method_from_config
    from deepclust.train.config import TrainConfig

    recipes = sorted(Path(__file__).resolve().parents[2].glob("configs/*_*.yaml"))
    names = {p.stem for p in recipes}
    assert {"digits_deepcluster", "digits_swav", "digits_dino"} <= names
    for path in recipes:
        cfg = TrainConfig.load(path)
        if cfg.method not in ("deepcluster", "swav", "dino", "ibot", "dinov2", "dac", "scan"):
            continue      # other helpers' methods
        method = build_method_from_config(cfg)
        assert method.name == cfg.method, path.name
