"""Dense prediction tasks: what a target is, the loss, the metrics and the search reward.

`tfnas.tasks.segmentation` holds semantic segmentation (seed 000, Sec. 4.1 reward).
"""
from tfnas.tasks.segmentation import (
    ConfusionMatrix,
    SegmentationLoss,
    confusion_matrix,
    distillation_loss,
    resize_logits,
    scores,
    segmentation_loss,
)

__all__ = [
    "ConfusionMatrix",
    "SegmentationLoss",
    "confusion_matrix",
    "distillation_loss",
    "resize_logits",
    "scores",
    "segmentation_loss",
]
