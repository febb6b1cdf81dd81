"""Tests for tfnas.data: digit scenes, image/mask folders, TFDS, split and pipeline."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image
from sklearn.datasets import load_digits

from tfnas import data


def _arrays(dataset):
    images, masks = zip(*[(i.numpy(), m.numpy()) for i, m in dataset])
    return np.stack(images), np.stack(masks)


# ----------------------------------------------------------------------------- digit scenes


def test_digit_scenes_same_seed_same_arrays_other_seed_differs():
    first = _arrays(data.digit_scenes("train", image_size=32, num_scenes=6, seed=3))
    again = _arrays(data.digit_scenes("train", image_size=32, num_scenes=6, seed=3))
    other = _arrays(data.digit_scenes("train", image_size=32, num_scenes=6, seed=4))
    test = _arrays(data.digit_scenes("test", image_size=32, num_scenes=6, seed=3))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[1], other[1])
    assert not np.array_equal(first[0], test[0])


def test_digit_scenes_dtypes_shapes_and_counts():
    dataset = data.digit_scenes("validation", image_size=(32, 48), num_scenes=5)
    image_spec, mask_spec = dataset.element_spec
    assert (image_spec.dtype, tuple(image_spec.shape)) == (tf.uint8, (32, 48, 3))
    assert (mask_spec.dtype, tuple(mask_spec.shape)) == (tf.int32, (32, 48))
    assert int(dataset.cardinality()) == 5
    images, masks = data.digit_scene_arrays("test", image_size=16, num_scenes=2)
    assert images.shape == (2, 16, 16, 3) and masks.shape == (2, 16, 16)
    assert data.NUM_CLASSES == 11 == len(data.CLASS_NAMES)
    assert data.CLASS_NAMES[0] == "background" and data.CLASS_NAMES[10] == "digit 9"


def test_default_scene_counts():
    assert data.digits.DEFAULT_NUM_SCENES == {"train": 512, "validation": 128, "test": 128}
    images, _ = data.digit_scene_arrays("test")
    assert images.shape == (128, 64, 64, 3)


def test_labels_are_the_visible_placed_digits():
    target = load_digits().target
    images, masks, placements = data.digit_scene_arrays(
        "train", image_size=48, num_scenes=24, seed=1, max_digits=5, return_digits=True
    )
    assert masks.min() == 0 and masks.max() <= 10
    assert max(len(p) for p in placements) > 1
    for mask, placed in zip(masks, placements):
        visible = {p.label for p in placed if p.visible_pixels > 0}
        assert set(np.unique(mask)) - {0} == visible
        assert np.count_nonzero(mask) == sum(p.visible_pixels for p in placed)
        outside = np.ones(mask.shape, bool)
        for p in placed:
            assert p.label == target[p.digit_index] + 1
            box = mask[p.top : p.top + p.size, p.left : p.left + p.size]
            assert np.count_nonzero(box == p.label) >= p.visible_pixels
            outside[p.top : p.top + p.size, p.left : p.left + p.size] = False
        assert not mask[outside].any()


def test_single_digit_mask_is_the_thresholded_scaled_digit():
    digits = load_digits()
    _, masks, placements = data.digit_scene_arrays(
        "validation", image_size=40, num_scenes=8, seed=2, max_digits=1, return_digits=True
    )
    for mask, (p,) in zip(masks, placements):
        glyph = digits.images[p.digit_index][..., None] / 16.0
        scaled = tf.image.resize(glyph, (p.size, p.size), method="bilinear").numpy()[..., 0]
        expected = np.zeros_like(mask)
        expected[p.top : p.top + p.size, p.left : p.left + p.size] = (scaled > 0.5) * p.label
        assert np.mean(mask != expected) < 0.005
        assert p.visible_pixels == np.count_nonzero(mask) > 0


def test_digit_pools_are_disjoint_and_scenes_use_their_own_pool():
    pools = data.digit_pools()
    train, val, test = (set(pools[s].tolist()) for s in ("train", "validation", "test"))
    assert not train & test and not train & val and not val & test
    assert train | val | test == set(range(1797))
    target = load_digits().target
    for split in pools:
        assert set(target[pools[split]]) == set(range(10))
    _, _, placements = data.digit_scene_arrays(
        "test", image_size=32, num_scenes=30, seed=5, return_digits=True
    )
    used = {p.digit_index for placed in placements for p in placed}
    assert used <= test and not used & train


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(split="val"), "'val'"),
        (dict(split="train", image_size=8), "image_size=8"),
        (dict(split="train", image_size=32, max_digit_size=40), "digit sizes"),
    ],
)
def test_digit_scenes_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.digit_scenes(num_scenes=2, **kwargs)


# ---------------------------------------------------------------------- image/mask folders


def _write_pair(tmp_path, stem, image, mask, image_ext=".png", palette=False):
    images_dir, masks_dir = tmp_path / "images", tmp_path / "masks"
    images_dir.mkdir(exist_ok=True)
    masks_dir.mkdir(exist_ok=True)
    Image.fromarray(image).save(images_dir / f"{stem}{image_ext}")
    mask_image = Image.fromarray(mask.astype(np.uint8), mode="L")
    if palette:  # VOC style: palette PNG whose indices are the labels
        mask_image = mask_image.convert("P")
        mask_image.putpalette(np.random.default_rng(0).integers(0, 256, 768).tolist())
        mask_image.putdata(mask.astype(np.uint8).ravel().tolist())
    mask_image.save(masks_dir / f"{stem}.png")
    return str(images_dir), str(masks_dir)


def _random_pair(rng, height=12, width=10, num_classes=4):
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = rng.integers(0, num_classes, (height, width)).astype(np.int32)
    mask[0, 0] = 255  # ignore label
    return image, mask


def test_folder_round_trip_grey_and_palette_masks(tmp_path):
    rng = np.random.default_rng(0)
    pairs = {"a": _random_pair(rng), "b": _random_pair(rng), "c": _random_pair(rng)}
    for stem, (image, mask) in pairs.items():
        images_dir, masks_dir = _write_pair(tmp_path, stem, image, mask, palette=stem == "b")
    Image.fromarray(pairs["a"][1].astype(np.uint8)).save(os.path.join(masks_dir, "extra.png"))
    dataset = data.image_mask_folder(images_dir, masks_dir, num_classes=4)
    loaded = list(dataset)
    assert len(loaded) == 3
    for (image, mask), stem in zip(loaded, sorted(pairs)):
        assert image.dtype == tf.uint8 and mask.dtype == tf.int32
        np.testing.assert_array_equal(image.numpy(), pairs[stem][0])
        np.testing.assert_array_equal(mask.numpy(), pairs[stem][1])

    resized = list(data.image_mask_folder(images_dir, masks_dir, 4, image_size=(6, 5)))
    image, mask = resized[0]
    assert image.shape == (6, 5, 3) and mask.shape == (6, 5)
    np.testing.assert_array_equal(mask.numpy(), pairs["a"][1][1::2, 1::2])


def test_folder_jpeg_images(tmp_path):
    image, mask = _random_pair(np.random.default_rng(1), 16, 16)
    image[:] = 200
    images_dir, masks_dir = _write_pair(tmp_path, "x", image, mask, image_ext=".jpg")
    ((loaded_image, loaded_mask),) = list(data.image_mask_folder(images_dir, masks_dir, 4))
    assert loaded_image.shape == (16, 16, 3)
    assert np.abs(loaded_image.numpy().astype(int) - 200).max() <= 3
    np.testing.assert_array_equal(loaded_mask.numpy(), mask)


def test_folder_missing_mask_names_the_image(tmp_path):
    rng = np.random.default_rng(2)
    images_dir, masks_dir = _write_pair(tmp_path, "a", *_random_pair(rng))
    Image.fromarray(_random_pair(rng)[0]).save(os.path.join(images_dir, "lonely.jpg"))
    with pytest.raises(FileNotFoundError, match=r"lonely\.jpg.*lonely\.png"):
        data.image_mask_folder(images_dir, masks_dir, num_classes=4)


def test_folder_size_mismatch_names_the_mask(tmp_path):
    rng = np.random.default_rng(3)
    image, _ = _random_pair(rng, 12, 10)
    _, mask = _random_pair(rng, 12, 11)
    images_dir, masks_dir = _write_pair(tmp_path, "wide", image, mask)
    with pytest.raises(ValueError, match=r"wide\.png' is 11x12 but image .*wide\.png' is 10x12"):
        data.image_mask_folder(images_dir, masks_dir, num_classes=4)


def test_folder_label_above_class_count_names_the_mask(tmp_path):
    rng = np.random.default_rng(4)
    image, mask = _random_pair(rng)
    mask[3, 3] = 7
    images_dir, masks_dir = _write_pair(tmp_path, "bad", image, mask)
    with pytest.raises(ValueError, match=r"bad\.png' has label 7, but num_classes=4"):
        data.image_mask_folder(images_dir, masks_dir, num_classes=4)
    assert len(list(data.image_mask_folder(images_dir, masks_dir, num_classes=8))) == 1
    with pytest.raises(ValueError, match="has label 7, 255"):
        data.image_mask_folder(images_dir, masks_dir, num_classes=4, ignore_label=0)


def test_folder_colour_mask_is_rejected(tmp_path):
    rng = np.random.default_rng(5)
    images_dir, masks_dir = _write_pair(tmp_path, "rgb", *_random_pair(rng))
    Image.fromarray(_random_pair(rng)[0]).save(os.path.join(masks_dir, "rgb.png"))
    with pytest.raises(ValueError, match=r"rgb\.png' has mode 'RGB'"):
        data.image_mask_folder(images_dir, masks_dir, num_classes=4)


def test_folder_empty_or_missing(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no images"):
        data.image_mask_folder(str(tmp_path / "empty"), str(tmp_path / "empty"), 4)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.image_mask_folder(str(tmp_path / "nowhere"), str(tmp_path), 4)


# ---------------------------------------------------------------------------------- TFDS


def _pet_examples(num_examples=3):
    rng = np.random.default_rng(6)
    return [
        {
            "image": rng.integers(0, 256, (20 + i, 16, 3), dtype=np.uint8),
            "segmentation_mask": rng.integers(1, 4, (20 + i, 16, 1), dtype=np.uint8),
        }
        for i in range(num_examples)
    ]


def _mock_as_dataset(examples):
    def as_dataset(self, *args, **kwargs):
        return tf.data.Dataset.from_generator(
            lambda: iter(examples),
            output_signature={
                "image": tf.TensorSpec((None, None, 3), tf.uint8),
                "segmentation_mask": tf.TensorSpec((None, None, 1), tf.uint8),
            },
        )

    return as_dataset


def test_tfds_dataset_maps_pet_examples(tmp_path):
    examples = _pet_examples()
    with tfds.testing.mock_data(as_dataset_fn=_mock_as_dataset(examples)):
        dataset = data.tfds_dataset(
            "oxford_iiit_pet", "train", num_classes=3, label_offset=1, data_dir=str(tmp_path)
        )
        loaded = list(dataset)
        resized = list(data.tfds_dataset("oxford_iiit_pet", "train", image_size=8, data_dir=str(tmp_path)))
    assert len(loaded) == 3
    for (image, mask), example in zip(loaded, examples):
        assert image.dtype == tf.uint8 and mask.dtype == tf.int32
        np.testing.assert_array_equal(image.numpy(), example["image"])
        np.testing.assert_array_equal(mask.numpy(), example["segmentation_mask"][..., 0] - 1)
    assert [tuple(m.shape) for _, m in resized] == [(8, 8)] * 3
    assert set(np.unique(resized[0][1].numpy())) <= {1, 2, 3}


def test_tfds_dataset_errors(tmp_path):
    with tfds.testing.mock_data(as_dataset_fn=_mock_as_dataset(_pet_examples())):
        with pytest.raises(KeyError, match="'mask'.*segmentation_mask"):
            data.tfds_dataset("oxford_iiit_pet", "train", mask_key="mask", data_dir=str(tmp_path))
        too_few = data.tfds_dataset("oxford_iiit_pet", "train", num_classes=3, data_dir=str(tmp_path))
        with pytest.raises(tf.errors.InvalidArgumentError, match="outside 0..2"):
            list(too_few)
    # Plain mock_data draws image and mask sizes independently: reported as a mismatch.
    with tfds.testing.mock_data(num_examples=2):
        mismatched = data.tfds_dataset("oxford_iiit_pet", "train", data_dir=str(tmp_path))
        with pytest.raises(tf.errors.InvalidArgumentError, match="differ from its image"):
            list(mismatched)


# ------------------------------------------------------------------------ split, pipeline


def test_split_sizes_disjoint_and_deterministic():
    dataset = tf.data.Dataset.range(20)
    meta_train, meta_val = data.split(dataset, fraction=0.25, seed=7)
    train, val = [int(x) for x in meta_train], [int(x) for x in meta_val]
    assert len(train) == 15 and len(val) == 5
    assert int(meta_train.cardinality()) == 15 and int(meta_val.cardinality()) == 5
    assert sorted(train + val) == list(range(20))
    again = [int(x) for x in data.split(dataset, fraction=0.25, seed=7)[1]]
    other = [int(x) for x in data.split(dataset, fraction=0.25, seed=8)[1]]
    assert again == val and other != val
    # Unknown cardinality (a filter) is counted; pairs keep their structure.
    pairs = data.digit_scenes("train", image_size=16, num_scenes=4).filter(lambda i, m: True)
    small_train, small_val = data.split(pairs, fraction=0.1)
    assert len(list(small_train)) == 3 and len(list(small_val)) == 1
    assert small_val.element_spec[1].shape == (16, 16)


@pytest.mark.parametrize(
    "size, fraction, match",
    [
        (10, 0.0, "fraction=0.0"),
        (10, 1.0, "fraction=1.0"),
        (1, 0.5, "1 element"),
    ],
)
def test_split_errors(size, fraction, match):
    with pytest.raises(ValueError, match=match):
        data.split(tf.data.Dataset.range(size), fraction=fraction)


def test_split_infinite_dataset():
    with pytest.raises(ValueError, match="infinite"):
        data.split(tf.data.Dataset.range(3).repeat(), fraction=0.5)


def test_pipeline_batches_preprocessed_and_flips_together():
    images, masks = data.digit_scene_arrays("train", image_size=16, num_scenes=10)
    dataset = tf.data.Dataset.from_tensor_slices((images, masks))
    batches = list(data.pipeline(dataset, batch_size=4))
    assert [tuple(b[0].shape) for b in batches] == [(4, 16, 16, 3)] * 2 + [(2, 16, 16, 3)]
    assert batches[0][0].dtype == tf.float32 and batches[0][1].dtype == tf.int32
    np.testing.assert_allclose(batches[0][0].numpy(), images[:4] / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(batches[0][1].numpy(), masks[:4])

    augmented = data.pipeline(dataset, batch_size=10, shuffle=True, seed=1, augment=True)
    ((out_images, out_masks),) = list(augmented)
    flips = 0
    for image, mask in zip(out_images.numpy(), out_masks.numpy()):
        raw = np.round((image + 1.0) * 127.5).astype(np.uint8)
        index = next(
            i for i in range(10) if np.array_equal(raw, images[i]) or np.array_equal(raw, images[i][:, ::-1])
        )
        flipped = not np.array_equal(raw, images[index])
        flips += flipped
        np.testing.assert_array_equal(mask, masks[index][:, ::-1] if flipped else masks[index])
    assert 0 < flips < 10
    ((again, _),) = list(data.pipeline(dataset, batch_size=10, shuffle=True, seed=1, augment=True))
    np.testing.assert_array_equal(again.numpy(), out_images.numpy())


def test_digit_subset_relabels_and_draws_only_those_digits():
    from sklearn.datasets import load_digits

    from tfnas.data import num_classes
    from tfnas.data.digits import digit_scene_arrays

    target = load_digits().target
    _, masks, placements = digit_scene_arrays("train", 48, 40, digits=(7, 0, 1), return_digits=True)
    assert num_classes((7, 0, 1)) == 4 and num_classes() == 11
    assert set(np.unique(masks)) <= {0, 1, 2, 3}
    relabel = {7: 1, 0: 2, 1: 3}
    for scene in placements:
        for p in scene:
            assert p.label == relabel[int(target[p.digit_index])]
    with pytest.raises(ValueError, match=r"digits=\[1, 1\] must be distinct ints in 0\.\.9"):
        digit_scene_arrays("train", 48, 2, digits=(1, 1))
