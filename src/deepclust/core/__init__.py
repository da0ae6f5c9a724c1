"""The foundation layer: pieces every other package may import, that import nothing of deepclust
but `deepclust.errors` and each other.

* `deepclust.core.distributed` -- torch.distributed helpers that are identities in one process,
  including the gradient-carrying all-gather;
* `deepclust.core.ema` -- the mean-teacher weight update;
* `deepclust.core.schedules` -- cosine lr / weight decay / momentum and teacher-temperature
  schedules, as arrays indexed by the global step (the loop computes them, losses receive values);
* `deepclust.core.io` -- the one atomic writer (bytes, text, JSON, CSV, .npy, safetensors);
* `deepclust.core.device` -- device and mixed-precision resolution, and the autocast context.
"""
