"""The data of a search from its `tfnas search` arguments; `tfnas train` and `tfnas rerank`
load a search's data again through `load_data`.

`load_data` picks the task's built-in data or the user's (image and mask folders, TFDS,
depth folders, COCO keypoints) and checks that the flags fit the task;
`pretrained_for_builtin_data` gives the shipped encoder and teacher where they fit
(`tfnas.pretrained`).
"""

import os

from tfnas.cli.errors import UsageError


def _check_folders(*flags):
    for flag, path in flags:
        if path is not None and not (os.path.isdir(path) and os.access(path, os.R_OK | os.X_OK)):
            raise UsageError(f"{flag} {path!r} is not a readable folder")


def load_data(args):
    """The search data of `args`: `(train, val or None, task)`."""
    if args.task == "segmentation":
        return _segmentation_data(args)
    from tfnas.tasks import get_task

    segmentation_only = [
        flag
        for flag, value in (
            ("--masks", args.masks),
            ("--val-masks", args.val_masks),
            ("--tfds", args.tfds),
            ("--num-classes", args.num_classes),
            ("--digits", args.digits),
            ("--min-digit-size", args.min_digit_size),
            ("--max-digit-size", args.max_digit_size),
        )
        if value is not None
    ]
    if segmentation_only:
        raise UsageError(
            f"{', '.join(segmentation_only)}: segmentation data, but --task is {args.task}; "
            "leave them out or search --task segmentation"
        )
    task = get_task(args.task)
    if args.task == "depth" and (args.images or args.depths):
        return (*_depth_data(args), task)
    if args.task == "pose-multi" and (args.images or args.keypoints):
        return (*_keypoint_data(args), task)
    if args.images:
        raise UsageError(
            "--task pose searches on the built-in figure crops; for your own data, crop one "
            "person per image and search from Python (tfnas.tasks.PoseTask.target_spec)"
        )
    train = task.builtin_data("train", image_size=args.image_size, num_samples=args.scenes, seed=args.seed)
    return train, None, task


def _depth_data(args):
    from tfnas import data

    if not (args.images and args.depths):
        raise UsageError("--task depth: --images needs --depths (e.g. --images nyu/rgb --depths nyu/depth)")
    if (args.val_images is None) != (args.val_depths is None):
        raise UsageError("--val-images and --val-depths go together")
    _check_folders(
        ("--images", args.images),
        ("--depths", args.depths),
        ("--val-images", args.val_images),
        ("--val-depths", args.val_depths),
    )
    load = lambda images, depths: data.image_depth_folder(
        images, depths, depth_scale=args.depth_scale, image_size=args.image_size
    )
    train = load(args.images, args.depths)
    return train, load(args.val_images, args.val_depths) if args.val_images else None


def _keypoint_data(args):
    from tfnas import data

    if not (args.images and args.keypoints):
        raise UsageError(
            "--task pose-multi: --images needs --keypoints (e.g. --images coco/val2017 "
            "--keypoints coco/person_keypoints_val2017.json)"
        )
    if (args.val_images is None) != (args.val_keypoints is None):
        raise UsageError("--val-images and --val-keypoints go together")
    _check_folders(("--images", args.images), ("--val-images", args.val_images))
    for flag, path in (("--keypoints", args.keypoints), ("--val-keypoints", args.val_keypoints)):
        if path is not None and not os.path.isfile(path):
            raise UsageError(f"{flag} {path!r} is not a file; give a COCO keypoints JSON")
    train = data.coco_keypoints(args.keypoints, args.images, image_size=args.image_size)
    val = None
    if args.val_images:
        # one padded people count for both, so meta-val batches like meta-train
        people = train.element_spec[1]["keypoints"].shape[0]
        val = data.coco_keypoints(
            args.val_keypoints, args.val_images, max_people=people, image_size=args.image_size
        )
    return train, val


def _segmentation_data(args):
    from tfnas import data
    from tfnas.tasks import get_task

    size = args.image_size
    other = [flag for flag, value in (("--depths", args.depths), ("--keypoints", args.keypoints)) if value]
    if other:
        raise UsageError(f"{', '.join(other)}: data of another task; add --task depth or --task pose-multi")
    if args.images or args.masks:
        if not (args.images and args.masks and args.num_classes):
            raise UsageError(
                "--images needs --masks and --num-classes (e.g. --images data/img "
                "--masks data/masks --num-classes 21)"
            )
        _check_folders(
            ("--images", args.images),
            ("--masks", args.masks),
            ("--val-images", args.val_images),
            ("--val-masks", args.val_masks),
        )
        train = data.image_mask_folder(args.images, args.masks, args.num_classes, image_size=size)
        val = None
        if args.val_images or args.val_masks:
            if not (args.val_images and args.val_masks):
                raise UsageError("--val-images and --val-masks go together")
            val = data.image_mask_folder(args.val_images, args.val_masks, args.num_classes, image_size=size)
        return train, val, get_task("segmentation", num_classes=args.num_classes)
    if args.tfds:
        if not args.num_classes:
            raise UsageError(f"--tfds {args.tfds} needs --num-classes")
        train = data.tfds_dataset(
            args.tfds,
            args.tfds_split,
            num_classes=args.num_classes,
            label_offset=args.label_offset,
            image_size=size,
        )
        return train, None, get_task("segmentation", num_classes=args.num_classes)
    digits = None
    if args.digits is not None:
        if not args.digits.isdigit():
            raise UsageError(f"--digits {args.digits!r} must list distinct digits, e.g. 017")
        digits = [int(c) for c in args.digits]
    classes = data.num_classes(digits)
    if args.num_classes not in (None, classes):
        raise UsageError(
            f"--num-classes {args.num_classes} does not match the built-in data "
            f"({classes} classes); drop it or give --images/--tfds"
        )
    train = data.digit_scenes(
        "train",
        size,
        num_scenes=args.scenes,
        seed=args.seed,
        digits=digits,
        min_digit_size=args.min_digit_size,
        max_digit_size=args.max_digit_size,
    )
    return train, None, get_task("segmentation", num_classes=classes)


def pretrained_for_builtin_data(args, task, teacher):
    """The encoder weights and teacher of a search: the shipped ones where they fit (`tfnas.pretrained`).

    A segmentation search on the built-in digit scenes with MobileNetV2 of width 0.35 and no
    `--encoder-weights` starts from the shipped pretrained encoder (so it skips the warm-up)
    and, with `--teacher auto`, distils from the shipped teacher restricted to the search's
    digits. `--encoder-weights none` warms up from scratch instead. `args` is left as given,
    so that `--resume` decides the same way again.

    Returns:
        `(encoder_weights, teacher)`.
    """
    weights = args.encoder_weights
    if weights == "none":
        return None, teacher
    builtin = task.name == "segmentation" and not (args.images or args.tfds)
    if weights is not None or not builtin:
        return weights, teacher
    from tfnas import pretrained

    alpha = args.alpha if args.alpha is not None else _space_default(args.space, "alpha")
    path = pretrained.digits_encoder_weights(alpha)
    if path is None:
        return None, teacher
    if teacher == "auto":
        teacher = pretrained.digits_teacher([int(c) for c in args.digits] if args.digits else None)
    print(f"tfnas: built-in data: encoder pretrained on digit scenes ({path}); no warm-up")
    return path, teacher


def _space_default(space_name, key):
    """The default of a constructor argument of a space (e.g. its MobileNetV2 `alpha`)."""
    import inspect

    from tfnas.spaces import SPACES

    parameter = inspect.signature(SPACES[space_name]).parameters.get(key)
    return None if parameter is None else parameter.default
