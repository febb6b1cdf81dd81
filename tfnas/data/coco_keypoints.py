"""User pose data from a COCO keypoints annotation file (`person_keypoints_*.json` layout).

Reads the annotation JSON with the standard library (no pycocotools needed to load) and
yields whole images with every annotated person, for the bottom-up `pose-multi` task:
`(uint8 image, {"keypoints": (P, J, 3), "area": (P,)})`. Crowd annotations (`iscrowd=1`)
are left out (tfnas does not mask crowd regions); people are padded with unlabelled rows
to `max_people`, and when an image has more people, those with most labelled joints are
kept. Every annotation is validated when the data set is built: a wrong joint count, a
visibility flag other than 0/1/2 or a labelled joint outside its image is reported with
the annotation id.

Example:
    >>> ds = coco_keypoints("annotations/person_keypoints_val2017.json", "val2017",
    ...                     image_size=512, max_people=20)
"""

import json
import os

import numpy as np
import tensorflow as tf

from tfnas.data._common import image_hw
from tfnas.tasks.keypoints import check_keypoints


def _read(annotation_file):
    try:
        with open(annotation_file) as handle:
            data = json.load(handle)
    except OSError as error:
        raise FileNotFoundError(f"annotation file {annotation_file!r} cannot be read: {error}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"annotation file {annotation_file!r} is not JSON: {error}") from None
    missing = [key for key in ("images", "annotations") if key not in data]
    if missing:
        raise ValueError(
            f"annotation file {annotation_file!r} has no {missing[0]!r}; expected "
            "the COCO keypoints layout (images, annotations, categories)"
        )
    return data


def coco_keypoint_arrays(annotation_file, num_joints=17):
    """Parse and validate a COCO keypoints file.

    Args:
        annotation_file: path of the JSON file.
        num_joints: int, joints per person. Default 17.

    Returns:
        list of `(file_name, (height, width), keypoints (P, J, 3), areas (P,))`, one per
        image in the file, sorted by image id; crowd annotations left out.

    Raises:
        FileNotFoundError, ValueError: naming the file or the annotation id at fault.
    """
    data = _read(annotation_file)
    people = {}
    for annotation in data["annotations"]:
        if annotation.get("iscrowd", 0):
            continue
        people.setdefault(annotation["image_id"], []).append(annotation)
    result = []
    for image in sorted(data["images"], key=lambda item: item["id"]):
        size = (int(image["height"]), int(image["width"]))
        rows, areas = [], []
        for annotation in people.get(image["id"], []):
            what = f"annotation {annotation.get('id')} of image {image['file_name']!r}"
            flat = np.asarray(annotation.get("keypoints", []), np.float32)
            if flat.size % 3:
                raise ValueError(f"{what} has {flat.size} keypoint values, not a multiple of 3")
            keypoints = check_keypoints(flat.reshape(-1, 3), num_joints, size, what)
            area = annotation.get("area")
            if area is None:
                x, y, w, h = annotation["bbox"]
                area = w * h
            rows.append(keypoints)
            areas.append(float(area))
        keypoints = np.stack(rows) if rows else np.zeros((0, num_joints, 3), np.float32)
        result.append((image["file_name"], size, keypoints, np.asarray(areas, np.float32)))
    return result


def _pad(keypoints, areas, max_people):
    order = np.argsort(-(keypoints[..., 2] > 0).sum(axis=-1), kind="stable")[:max_people]
    padded = np.zeros((max_people,) + keypoints.shape[1:], np.float32)
    padded_areas = np.zeros(max_people, np.float32)
    padded[: len(order)] = keypoints[order]
    padded_areas[: len(order)] = areas[order]
    return padded, padded_areas


def coco_keypoints(annotation_file, images_dir, max_people=None, image_size=None, num_joints=17):
    """Images and their people's keypoints from a COCO keypoints file, as `tf.data`.

    Args:
        annotation_file: path of the COCO keypoints JSON.
        images_dir: folder holding the images named by `file_name`.
        max_people: int, P of the padded targets; None takes the most people of any image.
        image_size: None to keep each image's size, or an int or `(height, width)`: images
            are resized bilinearly, keypoints and areas scaled with them (half-pixel
            centres: `x' = (x + 0.5) * W' / W - 0.5`).
        num_joints: int, joints per person. Default 17.

    Returns:
        unbatched `tf.data.Dataset` of `(uint8 (H, W, 3) image, {"keypoints": float32
        (P, J, 3), "area": float32 (P,)})`.

    Raises:
        FileNotFoundError: if the file or an image is missing.
        ValueError: on a bad annotation (named by id).
    """
    entries = coco_keypoint_arrays(annotation_file, num_joints)
    if not entries:
        raise ValueError(f"annotation file {annotation_file!r} lists no image")
    if max_people is None:
        max_people = max(1, max(len(k) for _, _, k, _ in entries))
    size = None if image_size is None else image_hw(image_size)
    paths, keypoints, areas = [], [], []
    for file_name, (height, width), people, people_areas in entries:
        path = os.path.join(images_dir, file_name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image {path!r} of {annotation_file!r} does not exist")
        people, people_areas = _pad(people, people_areas, int(max_people))
        if size is not None:
            sy, sx = size[0] / height, size[1] / width
            labelled = people[..., 2] > 0
            people[..., 0] = np.where(labelled, (people[..., 0] + 0.5) * sx - 0.5, 0.0)
            people[..., 1] = np.where(labelled, (people[..., 1] + 0.5) * sy - 0.5, 0.0)
            people_areas = people_areas * sx * sy
        paths.append(path)
        keypoints.append(people)
        areas.append(people_areas)

    def load(path, target):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        if size is not None:
            image = tf.image.resize(image, size, method="bilinear")
            image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
        return image, target

    dataset = tf.data.Dataset.from_tensor_slices(
        (paths, {"keypoints": np.stack(keypoints), "area": np.stack(areas)})
    )
    return dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
