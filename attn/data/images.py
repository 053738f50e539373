"""Image tasks: how digits, shapes_captions, mnist, cifar10 and coco_captions become a
:class:`~attn.data.task.Task` with float32 image inputs, and their augmentations.

Pixels are scaled to [-1, 1] (:func:`to_unit_range`; :func:`to_pixels` undoes it for plots).
Captions are targets ``[U]``: the words (or, for COCO, the bytes) then EOS, padded with 0.
Caption records also carry ``object_of [U]`` (which object each colour/shape word names, 0
for other tokens) and ``object_map [S, S]`` (which object each pixel shows), which the
attention-localisation metric reads.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from attn.data import digits, shapes_captions
from attn.data.loaders import generated_splits, make_config
from attn.data.task import Task, pad_to
from attn.data.tfds_images import IMAGE_OVERRIDES
from attn.data.tfds_text import as_bytes, load_catalog_splits
from attn.data.tokenizers import EOS_ID, ByteTokenizer, ClassLabels

__all__ = [
    "load_cifar10",
    "load_coco_captions",
    "load_digits",
    "load_mnist",
    "load_shapes_captions",
    "random_flip",
    "random_shift",
    "read_image_file",
    "to_pixels",
    "to_unit_range",
]


def to_unit_range(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [-1, 1]."""
    return np.asarray(pixels, np.float32) * (2.0 / 255.0) - 1.0


def to_pixels(images: np.ndarray) -> np.ndarray:
    """Model inputs in [-1, 1] -> float32 in [0, 1] (for drawing)."""
    return np.clip((np.asarray(images, np.float32) + 1.0) / 2.0, 0.0, 1.0)


# ----------------------------------------------------------------------------- augmentation


def random_shift(
    batch: dict[str, np.ndarray], rng: np.random.Generator, *, max_shift: int
) -> dict[str, np.ndarray]:
    """Each image moved by up to ``max_shift`` pixels along each axis, the uncovered border
    filled with the background value -1 (a random crop of the padded image)."""
    images = batch["inputs"]
    B, H, W, _ = images.shape
    padded = np.pad(
        images,
        ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)),
        constant_values=-1.0,
    )
    offsets = rng.integers(0, 2 * max_shift + 1, size=(B, 2))
    shifted = np.stack(
        [padded[b, r : r + H, c : c + W] for b, (r, c) in enumerate(offsets)]
    ).astype(np.float32)
    return {**batch, "inputs": shifted}


def random_flip(batch: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Each image mirrored left-right with probability 1/2."""
    flip = rng.random(len(batch["inputs"])) < 0.5
    images = np.where(flip[:, None, None, None], batch["inputs"][:, :, ::-1], batch["inputs"])
    return {**batch, "inputs": images}


def _shift_and_flip(
    batch: dict[str, np.ndarray], rng: np.random.Generator, *, max_shift: int
) -> dict[str, np.ndarray]:
    return random_flip(random_shift(batch, rng, max_shift=max_shift), rng)


# ----------------------------------------------------------------------------- classification


def _labelled_image(record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {
        "inputs": to_unit_range(record["image"]),
        "targets": np.int32(record["label"]),
        "weights": np.float32(1.0),
    }


def _classification_task(
    splits: Mapping[str, Any],
    image_shape: tuple[int, int, int],
    names: tuple[str, ...],
    augment: Any,
    **task_kwargs: Any,
) -> Task:
    labels = ClassLabels(list(names))
    return Task(
        kind="classify",
        input_vocab_size=0,
        target_vocab_size=labels.vocab_size,
        input_length=0,
        target_length=1,
        tokenizer=None,
        target_tokenizer=labels,
        splits=splits,
        preprocess=_labelled_image,
        image_shape=image_shape,
        augment=augment,
        **task_kwargs,
    )


def _digits_splits(data_dir: str) -> dict[str, Any]:
    import tensorflow_datasets as tfds

    from attn.data.locks import preparation_lock
    from attn.data.tfds_text import NO_GCS

    with preparation_lock(data_dir, digits.AttnDigits.name):
        sources = tfds.data_source(
            digits.AttnDigits.name,
            split=["train", "test"],
            data_dir=data_dir,
            builder_kwargs={"file_format": "array_record"},
            download_and_prepare_kwargs={"download_config": NO_GCS},
        )
    return dict(zip(("train", "test"), sources, strict=True))


def load_digits(options: dict, data_dir: str, **task_kwargs: Any) -> Task:
    augment = (
        functools.partial(random_shift, max_shift=options["max_shift"])
        if options["max_shift"]
        else None
    )
    return _classification_task(
        _digits_splits(data_dir), (8, 8, 1), digits.DIGIT_NAMES, augment, **task_kwargs
    )


def load_mnist(options: dict, data_dir: str, **task_kwargs: Any) -> Task:
    splits = load_catalog_splits("mnist", ("train", "test"), data_dir, IMAGE_OVERRIDES["mnist"])
    augment = (
        functools.partial(random_shift, max_shift=options["max_shift"])
        if options["max_shift"]
        else None
    )
    names = tuple(str(digit) for digit in range(10))
    return _classification_task(splits, (28, 28, 1), names, augment, **task_kwargs)


CIFAR10_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def load_cifar10(options: dict, data_dir: str, **task_kwargs: Any) -> Task:
    splits = load_catalog_splits("cifar10", ("train", "test"), data_dir, IMAGE_OVERRIDES["cifar10"])
    # The standard CIFAR augmentation: a random crop of the 4-pixel padded image, a flip.
    augment = (
        functools.partial(_shift_and_flip, max_shift=options["max_shift"])
        if options["max_shift"]
        else functools.partial(random_flip)
    )
    return _classification_task(splits, (32, 32, 3), CIFAR10_NAMES, augment, **task_kwargs)


# ----------------------------------------------------------------------------- captions


def caption_length(max_objects: int) -> int:
    """Words of the longest caption of ``max_objects`` objects, plus EOS."""
    return 3 * max_objects + 2 * (max_objects - 1) + 1


def _shapes_caption_record(record: Mapping[str, Any], *, length: int) -> dict[str, np.ndarray]:
    targets = pad_to([*np.asarray(record["caption"]).tolist(), EOS_ID], length)
    return {
        "inputs": to_unit_range(record["image"]),
        "targets": targets,
        "weights": (targets != 0).astype(np.float32),
        "object_of": shapes_captions.object_of_tokens(targets),
        "object_map": np.asarray(record["object_map"], np.uint8),
    }


def _caption_task(
    tokenizer: Any, length: int, image_shape: tuple[int, int, int], **task_kwargs: Any
) -> Task:
    return Task(
        kind="seq2seq",
        input_vocab_size=0,
        target_vocab_size=tokenizer.vocab_size,
        input_length=0,
        target_length=length,
        tokenizer=None,
        target_tokenizer=tokenizer,
        image_shape=image_shape,
        **task_kwargs,
    )


def load_shapes_captions(options: dict, data_dir: str, **task_kwargs: Any) -> Task:
    config = make_config(shapes_captions.ShapesCaptionsConfig, options)
    length = caption_length(config.max_objects)
    return _caption_task(
        shapes_captions.caption_tokenizer(),
        length,
        (config.image_size, config.image_size, 3),
        splits=generated_splits(shapes_captions.AttnShapesCaptions, config, data_dir),
        preprocess=functools.partial(_shapes_caption_record, length=length),
        **task_kwargs,
    )


def read_image_file(path: str, image_shape: tuple[int, int, int]) -> np.ndarray:
    """An image file as model input: float32 ``image_shape`` in [-1, 1] (converted to grey or
    RGB by the shape's channels, resized bilinearly). ``ValueError`` if it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    height, width, channels = image_shape
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            pixels = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"cannot read image {path!r}: {error}") from None
    return to_unit_range(pixels.reshape(height, width, channels))


def _square_image(image: np.ndarray, size: int) -> np.ndarray:
    """The centre square of ``image [H, W, 3]`` resized to ``[size, size, 3]`` (bilinear)."""
    from PIL import Image  # pillow comes with matplotlib

    image = np.asarray(image, np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(image[top : top + side, left : left + side, :3])
    return np.asarray(square.resize((size, size), Image.Resampling.BILINEAR))


def _coco_record(record: Mapping[str, Any], *, size: int, length: int) -> dict[str, np.ndarray]:
    # The first reference caption, as bytes; mock records may hold a bare string.
    captions = record["captions"]
    text = captions["text"][0] if isinstance(captions, Mapping) else captions[0]["text"]
    ids = ByteTokenizer().encode_bytes(as_bytes(text).strip().lower())[: length - 1]
    targets = pad_to([*ids, EOS_ID], length)
    return {
        "inputs": to_unit_range(_square_image(record["image"], size)),
        "targets": targets,
        "weights": (targets != 0).astype(np.float32),
    }


def load_coco_captions(options: dict, data_dir: str, **task_kwargs: Any) -> Task:
    splits = load_catalog_splits(
        "coco_captions", ("train", "test"), data_dir, IMAGE_OVERRIDES["coco_captions"]
    )
    size, length = options["image_size"], options["caption_length"]
    return _caption_task(
        ByteTokenizer(),
        length,
        (size, size, 3),
        splits=splits,
        preprocess=functools.partial(_coco_record, size=size, length=length),
        **task_kwargs,  # no flips: they would contradict "left" and "right" in captions
    )
