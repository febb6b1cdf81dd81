"""The bi-level search settings of 3M-Pose, Sec. 4.1 (Hoang (3M-Pose, 2021); spec sections 8 and 12)."""

import dataclasses

from tfnas.oneshot.gumbel import LinearTemperature
from tfnas.oneshot.losses import flops_loss


@dataclasses.dataclass
class SearchSettings:
    """The bi-level search of Sec. 4.1 (spec sections 8 and 12): optimisers, schedules, loss weights.

    Weights are trained on the training split and {alpha, beta, m} on a held-out architecture
    split of the training data (`arch_split`; the thesis uses val2017, whose results then leak).
    Under `OneShotTuner` the training data are meta-train: the proxy task's meta-val, on which
    the derived architectures are scored, is held out before this split.

    Args:
        epochs: int, search epochs (35).
        model_lr: float, Adam learning rate of the weights, constant (1e-3).
        arch_lr: float, Adam learning rate of the architecture parameters at epoch 0 (5e-3).
        arch_lr_drops: tuple of (epoch, lr): from that epoch on (((20, 2.5e-3), (25, 1.25e-3))).
        arch_split: float, share of the supernet's training data held out for the architecture (0.1).
        temperature_start: float, tau at the first step (10).
        temperature_end: float, tau at the last step (0.001).
        heatmap_weight, grouping_weight, teacher_weight, flops_weight: loss weights (1, 1e-3, 1, 1e-3).
        flops_target: float, T in GFLOPs (47.8).
        flops_exponent: float, w (0.15).
        flops_warmup_start, flops_warmup_factor, flops_warmup_every, flops_warmup_ceiling:
            the warm-up s(e) (1e-4, 10, 3, 1).
        latency_target_ms: float or None: the constraint's latency variant, `(ms / target) ** w`
            with the FLOPs term's weight, warm-up and exponent, where ms is the sampled
            architecture's latency from a per-op table (`SupernetSearch(latency_table=...)`,
            `FabricLatency`). None (default): the thesis' FLOPs term.
    """

    epochs: int = 35
    model_lr: float = 1e-3
    arch_lr: float = 5e-3
    arch_lr_drops: tuple = ((20, 2.5e-3), (25, 1.25e-3))
    arch_split: float = 0.1
    temperature_start: float = 10.0
    temperature_end: float = 1e-3
    heatmap_weight: float = 1.0
    grouping_weight: float = 1e-3
    teacher_weight: float = 1.0
    flops_weight: float = 1e-3
    flops_target: float = 47.8
    flops_exponent: float = 0.15
    flops_warmup_start: float = 1e-4
    flops_warmup_factor: float = 10.0
    flops_warmup_every: int = 3
    flops_warmup_ceiling: float = 1.0
    latency_target_ms: float = None

    def arch_lr_at(self, epoch):
        """The architecture learning rate of a 0-based epoch."""
        lr = self.arch_lr
        for start, value in sorted(self.arch_lr_drops):
            if int(epoch) >= start:
                lr = value
        return lr

    def temperature(self, steps_per_epoch):
        """The `LinearTemperature` schedule over `epochs * steps_per_epoch` steps."""
        return LinearTemperature(
            self.epochs * int(steps_per_epoch), self.temperature_start, self.temperature_end
        )

    def search_loss(self, heatmap, grouping, teacher, madds, epoch, scale=None, task=0.0, constraint=None):
        """L = heatmap + 1e-3 grouping + teacher + 1e-3 s(e) (GFLOPs / 47.8) ** 0.15 (the thesis' weights).

        `scale` (optional) replaces the FLOPs term's factor 1e-3 s(e) (`flops_loss`), so that a
        traced step takes it as an argument instead of the epoch. `task` is the loss of a task
        other than bottom-up pose (its `Task.loss` summed over the heads; then `heatmap` and
        `grouping` are 0), added with weight 1 in their place. `constraint`, when given,
        replaces the FLOPs term (the latency variant, `latency_loss`).
        """
        return (
            task
            + self.heatmap_weight * heatmap
            + self.grouping_weight * grouping
            + self.teacher_weight * teacher
            + (flops_loss(madds, epoch, self, scale=scale) if constraint is None else constraint)
        )
