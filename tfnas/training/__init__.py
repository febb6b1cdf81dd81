"""Proxy training of search trials (Nekrasov et al., CVPR 2019, Sec. 3.2) and full training.

- `ProxyTask`, `ProxySettings`: the two-stage proxy task that scores an architecture
  (`prepare` once per search, `run_trial` per architecture).
- `FeatureCache`: encoder and teacher outputs computed once per search, keyed by fingerprint.
- `ProxyModel`, `run_stage`, `evaluate_reward`: the two training stages and the reward.
- `make_optimizer`, `ParameterGroup`: optimizers keeping Polyak averages of the weights.
- `ProgressiveTermination`: the early-termination rule between the stages.
- `warm_up`: trains the encoder with a reference decoder when no pretrained weights exist.
- `train` (`full.py`), `TrainSettings` (`recipes.py`): full training of a found architecture
  with its task's recipe (Sec. 4.4 and App. B), checkpointed every epoch (`checkpoints.py`);
  `tfnas train` (`train_cli.py`).
- `rerank` (`rerank.py`): the K best architectures of a search trained longer and reordered
  (Sec. 4.2); `tfnas rerank` (`rerank_cli.py`).
"""

from tfnas.training.cache import CachedFeatures, FeatureCache, data_fingerprint, weights_fingerprint
from tfnas.training.full import train
from tfnas.training.polyak import ParameterGroup, make_optimizer
from tfnas.training.proxy import PreparedData, ProxySettings, ProxyTask, trial_seed
from tfnas.training.recipes import TrainSettings
from tfnas.training.rerank import rerank
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
    "TrainSettings",
    "build_reference_model",
    "data_fingerprint",
    "evaluate_reward",
    "make_optimizer",
    "pad_to_batches",
    "rerank",
    "reference_decoder",
    "run_stage",
    "set_batchnorm_momentum",
    "simple_head",
    "train",
    "trial_seed",
    "warm_up",
    "weights_fingerprint",
]
