"""One-shot search of 3M-Pose, Hoang 2021 (Hoang, 3M-Pose thesis 2021, Sec. 3.2.1, 3.3, 3.4, 4.1): Gumbel-softmax, Dyn-EGS, losses.

Specification and readings: `/work/shared/3M-POSE.md` (sections in brackets).

- `gumbel_softmax` and `LinearTemperature` [6]: y = softmax((z + g) / tau), tau from 10 down
  to 0.001 linearly, per step.
- `dyn_egs` [7]: Dynamic Ensemble Gumbel Softmax. A density parameter m (one per edge for ops,
  one per cell for inputs) picks by a hard Gumbel one-hot a state i, and the top-(i + 1)
  candidates of the Gumbel-perturbed alpha (or beta) are kept. The forward weights are exactly
  0/1 (a derived network's plain sums); gradients flow straight through to the soft Gumbel
  probabilities of alpha/beta and of m. `derive_topk` is the same without noise.
- `ArchitectureParameters` holds alpha (cells x 3 edges x 9 ops), beta (cells x 3 inputs) and
  the densities m_alpha (cells x 3 edges x R_alpha) and m_beta (cells x R_beta) of a
  `FabricSpace`, samples weights and derives a genotype.
- `FabricCosts` [8]: multiply-adds of every op at its row's resolution, of every resampled
  input, and of the fixed parts (stem, cell projections, fuse, split, heads), so that
  `expected_madds(weights)` is differentiable in the weights and equals the counted
  multiply-adds (`tfnas.profile.madds`) of the derived network for 0/1 weights. `flops_loss`
  is `(GFLOPs / T) ** w` scaled by the step-wise warm-up `flops_warmup`. `FabricLatency` sums
  the same parts' entries in a per-op latency table (`tfnas.latency`), and `latency_loss` is
  the constraint's latency variant on it (`SearchSettings.latency_target_ms`).
- `rdm`, `rdm_correlation`, `teacher_guidance_loss` [9]: representational dissimilarity
  matrices and 1 - mean over teacher layers of the best Pearson correlation with a student
  layer, on the upper triangle.
- `FabricSupernet` [3-5, 10]: the network with every candidate op and input, mixed by the
  sampled weights through `tfnas.choice.Choice` layers in weighted mode (the choice layer of
  the index-mode supernets), which skip every candidate whose weight is 0: a Dyn-EGS step
  computes the 1-2 kept ops of an edge and the kept inputs of a cell.
- `SearchSettings` [8, 12]: the bi-level schedule and loss weights of the thesis.
- `tfnas.oneshot.search.SupernetSearch` [12]: the bi-level training of the supernet, resumable
  per epoch (import it from its module; it uses `tfnas.training`). `tfnas.tuners.oneshot`
  turns its result into keras-tuner trials (`GumbelOracle`, `OneShotTuner`).
"""

from tfnas.oneshot.costs import FabricCosts, FabricLatency
from tfnas.oneshot.gumbel import (
    ArchitectureParameters,
    LinearTemperature,
    derive_topk,
    dyn_egs,
    gumbel_softmax,
    sample_gumbel,
)
from tfnas.oneshot.losses import (
    flops_loss,
    flops_scale,
    flops_warmup,
    latency_loss,
    rdm,
    rdm_correlation,
    teacher_guidance_loss,
)
from tfnas.oneshot.settings import SearchSettings
from tfnas.oneshot.supernet import FabricSupernet

__all__ = [
    "ArchitectureParameters",
    "FabricCosts",
    "FabricLatency",
    "FabricSupernet",
    "LinearTemperature",
    "SearchSettings",
    "derive_topk",
    "dyn_egs",
    "flops_loss",
    "flops_scale",
    "flops_warmup",
    "gumbel_softmax",
    "latency_loss",
    "rdm",
    "rdm_correlation",
    "sample_gumbel",
    "teacher_guidance_loss",
]
