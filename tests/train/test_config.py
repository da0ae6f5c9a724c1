"""TrainConfig: YAML recipe <- overrides <- key=value sets, and errors that say what is wrong
(types and method_kwargs are checked too: tests/methods/test_registry.py)."""

from __future__ import annotations

import pytest

from deepclust.errors import DeepclustError
from deepclust.train.config import TrainConfig, resolve_config_path


def test_config_yaml_overrides_and_sets(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: swav\nmethod_kwargs: {n_prototypes: 30}\nepochs: 5\nlr: 0.6\noptimizer: lars\n")
    cfg = TrainConfig.load(recipe, overrides={"epochs": 7, "lr": None},
                           sets=["method_kwargs.epsilon=0.03", "amp=off", "weight_decay_end=0.4"])
    assert (cfg.method, cfg.epochs, cfg.lr, cfg.optimizer, cfg.amp) == ("swav", 7, 0.6, "lars", "off")
    assert cfg.method_kwargs == {"n_prototypes": 30, "epsilon": 0.03} and cfg.weight_decay_end == 0.4
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert resolve_config_path(str(recipe)) == recipe


def test_config_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(DeepclustError, match="unknown training config key.*learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(DeepclustError, match="epochs must be >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(DeepclustError, match="optimizer must be"):
        TrainConfig(optimizer="adam")
    with pytest.raises(DeepclustError, match="key=value"):
        TrainConfig.load(sets=["epochs"])
    with pytest.raises(DeepclustError, match="not found"):
        resolve_config_path("no_such_recipe_xyz")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(DeepclustError, match="mapping"):
        TrainConfig.load(bad)
