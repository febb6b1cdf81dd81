"""Segmentation data for tfnas: built-in digit scenes, image/mask folders, TFDS, pipelines.

Every loader returns an unbatched `tf.data.Dataset` of `(uint8 (H, W, 3) image,
int32 (H, W) class map)`; label 255 (`tfnas.preprocessing.IGNORE_LABEL`) marks pixels to
skip. `pipeline` batches such pairs into model inputs and `split` holds out a
meta-validation part when no validation data is given.

- `digit_scenes(split, ...)`: built-in scenes of sklearn's handwritten digits on textured
  backgrounds, no download; `NUM_CLASSES`, `CLASS_NAMES`; `digit_scene_arrays` for numpy.
- `image_mask_folder(images_dir, masks_dir, num_classes, ...)`: CamVid / VOC style folders.
- `tfds_dataset(name, split, ...)`: a TensorFlow Datasets data set by name.
- `split(dataset, fraction, seed)`, `pipeline(dataset, batch_size, ...)`,
  `count_examples`, `as_examples` (the data forms a search accepts).

Data of the other tasks (`tfnas.tasks`), with their own targets:
- depth: `depth_scenes(split, ...)` (built-in RGB-D rooms, float32 metres, 0 = missing) and
  `image_depth_folder(images_dir, depths_dir, depth_scale)` (16-bit PNG depth, NYUDv2 style);
- pose: `figure_crops(split, ...)` (one stick figure per crop, 17 COCO joints, top-down),
  `figure_scenes(split, ...)` (several figures, bottom-up) and `coco_keypoints(json, images_dir)`.
"""

from tfnas.data.coco_keypoints import coco_keypoints
from tfnas.data.depth_folders import image_depth_folder, read_depth
from tfnas.data.depth_scenes import depth_scene_arrays, depth_scenes
from tfnas.data.digits import (
    CLASS_NAMES,
    NUM_CLASSES,
    Placement,
    digit_pools,
    digit_scene_arrays,
    digit_scenes,
    num_classes,
)
from tfnas.data.figures import figure_crop_arrays, figure_crops, figure_scene_arrays, figure_scenes
from tfnas.data.folders import image_mask_folder
from tfnas.data.pipelines import as_examples, count_examples, pipeline, split
from tfnas.data.tfds_datasets import tfds_dataset

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "Placement",
    "as_examples",
    "coco_keypoints",
    "count_examples",
    "depth_scene_arrays",
    "depth_scenes",
    "digit_pools",
    "digit_scene_arrays",
    "digit_scenes",
    "figure_crop_arrays",
    "figure_crops",
    "figure_scene_arrays",
    "figure_scenes",
    "image_depth_folder",
    "image_mask_folder",
    "num_classes",
    "pipeline",
    "read_depth",
    "split",
    "tfds_dataset",
]
