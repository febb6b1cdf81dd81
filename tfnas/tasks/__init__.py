"""Dense prediction tasks: what a target is, the head, the loss, the metrics and the search reward.

`tfnas.tasks.base.Task` is the abstraction every part uses; `TASKS` / `get_task(name)` give
the four tasks:

- `segmentation` (`tfnas.tasks.segmentation`, Nekrasov et al. (CVPR 2019) Sec. 4.1 reward);
- `depth` (`tfnas.tasks.depth`, Nekrasov et al. (CVPR 2019) Sec. 4.5.2 and App. B: berHu, NYUDv2 metrics);
- `pose` (`tfnas.tasks.pose`, top-down single person, Nekrasov et al. (CVPR 2019) Sec. 4.5.1: heatmaps, PCKh);
- `pose-multi` (`tfnas.tasks.pose_multi`, bottom-up, 3M-Pose: heatmaps + AE tags, COCO AP).
"""

from tfnas.tasks.base import Task, UpsampleBy
from tfnas.tasks.depth import BerHuLoss, DepthMetrics, DepthTask, berhu_loss, depth_scores
from tfnas.tasks.pose import JointsMSELoss, PCKh, PoseTask, flip_test, joints_mse_loss, pckh
from tfnas.tasks.pose_multi import (
    AssociativeEmbeddingLoss,
    COCOKeypointAP,
    PoseMultiTask,
    ae_loss,
    coco_keypoint_eval,
    decode,
    flip_test_multi,
    group,
    multi_pose_loss,
)
from tfnas.tasks.segmentation import (
    ConfusionMatrix,
    SegmentationLoss,
    SegmentationTask,
    confusion_matrix,
    distillation_loss,
    resize_logits,
    scores,
    segmentation_loss,
)

#: Task classes by registry name (`tfnas search --task NAME`).
TASKS = {
    "segmentation": SegmentationTask,
    "depth": DepthTask,
    "pose": PoseTask,
    "pose-multi": PoseMultiTask,
}


def get_task(task, **kwargs):
    """A task by registry name, built with `kwargs`; a `Task` instance is returned as is.

    Args:
        task: a name in `TASKS` or a `Task`.
        **kwargs: constructor arguments (e.g. `num_classes=21` for segmentation).

    Returns:
        a `Task`.

    Raises:
        ValueError: if the name is unknown, or kwargs are given with an instance.
    """
    if isinstance(task, Task):
        if kwargs:
            raise ValueError(f"task {task!r} is already built; pass arguments with a task name")
        return task
    if task not in TASKS:
        raise ValueError(f"task {task!r} is unknown; use one of {', '.join(TASKS)}")
    return TASKS[task](**kwargs)


__all__ = [
    "TASKS",
    "AssociativeEmbeddingLoss",
    "BerHuLoss",
    "COCOKeypointAP",
    "ConfusionMatrix",
    "DepthMetrics",
    "DepthTask",
    "JointsMSELoss",
    "PCKh",
    "PoseMultiTask",
    "PoseTask",
    "SegmentationLoss",
    "SegmentationTask",
    "Task",
    "UpsampleBy",
    "ae_loss",
    "berhu_loss",
    "coco_keypoint_eval",
    "confusion_matrix",
    "decode",
    "depth_scores",
    "distillation_loss",
    "flip_test",
    "flip_test_multi",
    "get_task",
    "group",
    "joints_mse_loss",
    "multi_pose_loss",
    "pckh",
    "resize_logits",
    "scores",
    "segmentation_loss",
]
