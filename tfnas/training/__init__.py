"""Proxy training of search trials (Nekrasov et al., CVPR 2019, Sec. 3.2).

- `ProxyTask`, `ProxySettings`: the two-stage proxy task that scores an architecture
  (`prepare` once per search, `run_trial` per architecture).
- `FeatureCache`: encoder and teacher outputs computed once per search, keyed by fingerprint.
- `ProxyModel`, `run_stage`, `evaluate_reward`: the two training stages and the reward.
- `make_optimizer`, `ParameterGroup`: optimizers keeping Polyak averages of the weights.
- `ProgressiveTermination`: the early-termination rule between the stages.
- `warm_up`: trains the encoder with a reference decoder when no pretrained weights exist.
"""

from tfnas.training.cache import CachedFeatures, FeatureCache, data_fingerprint, weights_fingerprint
from tfnas.training.polyak import ParameterGroup, make_optimizer
from tfnas.training.proxy import PreparedData, ProxySettings, ProxyTask, trial_seed
from tfnas.training.stages import (
    NonFiniteLossError,
    ProxyModel,
    evaluate_reward,
    pad_to_batches,
    run_stage,
    set_batchnorm_momentum,
)
from tfnas.training.termination import ProgressiveTermination
from tfnas.training.warmup import build_reference_model, reference_decoder, simple_head, warm_up

__all__ = [
    "CachedFeatures",
    "FeatureCache",
    "NonFiniteLossError",
    "ParameterGroup",
    "PreparedData",
    "ProgressiveTermination",
    "ProxySettings",
    "ProxyTask",
    "ProxyModel",
    "build_reference_model",
    "data_fingerprint",
    "evaluate_reward",
    "make_optimizer",
    "pad_to_batches",
    "reference_decoder",
    "run_stage",
    "set_batchnorm_momentum",
    "simple_head",
    "trial_seed",
    "warm_up",
    "weights_fingerprint",
]
