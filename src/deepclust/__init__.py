"""deepclust: deep image clustering.

Unlabeled images in, meaningful groups out: self-supervised training (DeepCluster, SwAV,
DINO, iBOT, DINOv2-style, DAC), pretrained foundation features (DINOv2, CLIP), clustering,
honest evaluation and reports.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "DeepClusterer"]


def __getattr__(name: str):
    # The estimator pulls in torch and the methods; import it lazily so that
    # `import deepclust` stays cheap for the data and clustering utilities.
    if name == "DeepClusterer":
        from deepclust.estimator import DeepClusterer

        return DeepClusterer
    raise AttributeError(name)
