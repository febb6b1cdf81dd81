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
"""
from tfnas.data.digits import (
    num_classes,
    CLASS_NAMES,
    NUM_CLASSES,
    Placement,
    digit_pools,
    digit_scene_arrays,
    digit_scenes,
)
from tfnas.data.folders import image_mask_folder
from tfnas.data.pipelines import as_examples, count_examples, pipeline, split
from tfnas.data.tfds_datasets import tfds_dataset

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "Placement",
    "as_examples",
    "count_examples",
    "digit_pools",
    "digit_scene_arrays",
    "digit_scenes",
    "image_mask_folder",
    "num_classes",
    "pipeline",
    "split",
    "tfds_dataset",
]
