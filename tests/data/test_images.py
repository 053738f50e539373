"""Image data: the digits split, the generated shapes_captions (captions, object maps and the
held-out combinations), augmentation, and the catalog loaders on mock records and on
stand-ins for their downloads (the TensorFlow-free preparation)."""

from __future__ import annotations

import gzip
import types

import numpy as np
import pytest

import attn.data
from attn.data import images, shapes_captions
from attn.data.digits import digits_split
from attn.data.tfds_images import IMAGE_OVERRIDES

from .mock_images import mock_image_data

SHAPES = {"num_train": 60, "num_validation": 8, "num_test": 20, "image_size": 24}


def test_digits_split_is_the_stratified_75_25_split():
    split = digits_split()
    (train_x, train_y), (test_x, test_y) = split["train"], split["test"]
    assert train_x.shape == (1347, 8, 8, 1) and test_x.shape == (450, 8, 8, 1)
    assert train_x.dtype == np.uint8 and train_x.max() == 255
    # Stratified: each class's share of the test split is within one image of 25%.
    for digit in range(10):
        total = (train_y == digit).sum() + (test_y == digit).sum()
        assert abs((test_y == digit).sum() - 0.25 * total) <= 1


def test_digits_task_reads_images_in_unit_range(tmp_path):
    task = attn.data.get_task(
        {"name": "digits", "data_dir": str(tmp_path), "batch_size": 8, "max_shift": 0}
    )
    assert (task.kind, task.image_shape, task.num_examples("test")) == ("classify", (8, 8, 1), 450)
    batch = task.train_batch(3)
    assert batch["inputs"].shape == (8, 8, 8, 1) and batch["inputs"].dtype == np.float32
    assert batch["inputs"].min() >= -1.0 and batch["inputs"].max() <= 1.0
    np.testing.assert_array_equal(batch["inputs"], task.train_batch(3)["inputs"])


def test_shift_augmentation_is_a_pure_function_of_seed_and_step(tmp_path):
    config = {"name": "digits", "data_dir": str(tmp_path), "batch_size": 16, "max_shift": 1}
    task = attn.data.get_task(config)
    plain = attn.data.get_task({**config, "max_shift": 0})
    first, again = task.train_batch(5), attn.data.get_task(config).train_batch(5)
    np.testing.assert_array_equal(first["inputs"], again["inputs"])
    assert not np.array_equal(first["inputs"], plain.train_batch(5)["inputs"])
    # Each image is the plain one moved by at most one pixel (its border filled with -1).
    original = plain.train_batch(5)["inputs"]
    for shifted, image in zip(first["inputs"], original, strict=True):
        padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), constant_values=-1.0)
        crops = [padded[r : r + 8, c : c + 8] for r in range(3) for c in range(3)]
        assert any(np.array_equal(shifted, crop) for crop in crops)
    # A process's rows of the batch are augmented as in the whole batch.
    rows = task.train_batch(5, rows=slice(4, 12))
    np.testing.assert_array_equal(rows["inputs"], first["inputs"][4:12])


def test_random_flip_mirrors_about_half_the_images():
    batch = {"inputs": np.arange(64 * 2 * 3, dtype=np.float32).reshape(64, 1, 2, 3)}
    flipped = images.random_flip(batch, np.random.default_rng(0))["inputs"]
    mirrored = np.all(flipped == batch["inputs"][:, :, ::-1], axis=(1, 2, 3))
    unchanged = np.all(flipped == batch["inputs"], axis=(1, 2, 3))
    assert np.all(mirrored | unchanged) and 16 < mirrored.sum() < 48


def test_held_out_triples_leave_every_pair_in_training():
    held_out = shapes_captions.held_out_triples(0.15)
    assert len(held_out) == round(0.15 * 162)
    kept = {
        (c, s, p) for c in range(6) for s in range(3) for p in range(9) if (c, s, p) not in held_out
    }
    assert {(c, s) for c, s, _ in kept} == {(c, s) for c in range(6) for s in range(3)}
    assert len({(c, p) for c, _, p in kept}) == 54 and len({(s, p) for _, s, p in kept}) == 27
    assert shapes_captions.held_out_triples(0.15) == held_out  # fixed, whatever the data seed


def _objects_of(record: dict) -> list[tuple[int, int, int]]:
    """(colour, shape, cell) of each object, read back from the caption and the object map."""
    words = shapes_captions.caption_tokenizer().decode(record["caption"]).split()
    named = [(words[i + 1], words[i + 2]) for i, word in enumerate(words) if word == "a"]
    size = record["object_map"].shape[0]
    cell_size = size // 3
    margin = (size - 3 * cell_size) // 2
    objects = []
    for number, (colour, shape) in enumerate(named, start=1):
        rows, columns = np.nonzero(record["object_map"] == number)
        cell = ((rows.min() - margin) // cell_size) * 3 + (columns.min() - margin) // cell_size
        objects.append(
            (list(shapes_captions.COLOURS).index(colour), shapes_captions.SHAPES.index(shape), cell)
        )
    return objects


def test_shapes_captions_records_name_their_objects_and_hold_out_combinations(tmp_path):
    task = attn.data.get_task(
        {"name": "shapes_captions", "data_dir": str(tmp_path), "batch_size": 4, **SHAPES}
    )
    held_out = shapes_captions.held_out_triples(0.15)
    for split in ("train", "test"):
        source = task.splits[split]
        for index in range(len(source)):
            record = source[index]
            objects = _objects_of(record)
            assert 1 <= len(objects) <= 3
            assert [cell for *_, cell in objects] == sorted(cell for *_, cell in objects)
            novel = sum(triple in held_out for triple in objects)
            assert novel == 0 if split == "train" else novel >= 1
            # The object's pixels carry its colour (the brightest channel matches).
            for number, (colour, _, _) in enumerate(objects, start=1):
                pixels = record["image"][record["object_map"] == number].astype(float)
                wanted = np.asarray(list(shapes_captions.COLOURS.values())[colour])
                assert np.corrcoef(pixels.mean(axis=0), wanted)[0, 1] > 0.9


def test_shapes_captions_batches_mark_the_named_object_of_each_word(tmp_path):
    task = attn.data.get_task(
        {"name": "shapes_captions", "data_dir": str(tmp_path), "batch_size": 4, **SHAPES}
    )
    assert task.target_length == images.caption_length(3) == 14
    example = task.example("test", 0)
    words = task.target_tokenizer.token_strings(example["targets"])
    eos = words.index("<eos>")
    assert example["weights"][: eos + 1].all() and not example["weights"][eos + 1 :].any()
    for word, obj in zip(words, example["object_of"], strict=True):
        colour_or_shape = word in shapes_captions.COLOURS or word in shapes_captions.SHAPES
        assert (obj > 0) == colour_or_shape
    assert set(np.unique(example["object_map"])) == set(range(example["object_of"].max() + 1))


def test_shapes_captions_are_deterministic_per_seed(tmp_path):
    config = {"name": "shapes_captions", "batch_size": 4, **SHAPES}
    first = attn.data.get_task({**config, "data_dir": str(tmp_path / "a")}).example("train", 7)
    again = attn.data.get_task({**config, "data_dir": str(tmp_path / "b")}).example("train", 7)
    other = attn.data.get_task({**config, "data_dir": str(tmp_path / "c"), "data_seed": 1}).example(
        "train", 7
    )
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["inputs"], other["inputs"])


@pytest.mark.parametrize(
    ("name", "shape"), [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))], ids=["mnist", "cifar10"]
)
def test_image_classification_loaders_on_mock_data(name, shape, tmp_path):
    with mock_image_data():
        task = attn.data.get_task({"name": name, "data_dir": str(tmp_path), "batch_size": 2})
        batch = task.train_batch(0)
        test = next(task.eval_batches("test"))
    assert task.image_shape == shape and task.target_vocab_size == 10
    assert batch["inputs"].shape == (2, *shape) and batch["targets"].shape == (2,)
    assert test["inputs"].dtype == np.float32 and test["inputs"].max() <= 1.0


def test_coco_captions_loader_on_mock_data(tmp_path):
    with mock_image_data():
        task = attn.data.get_task(
            {
                "name": "coco_captions",
                "data_dir": str(tmp_path),
                "batch_size": 2,
                "image_size": 16,
                "caption_length": 10,
            }
        )
        batch = next(task.eval_batches("train"))
    assert task.image_shape == (16, 16, 3) and task.target_length == 10
    decoded = [task.target_tokenizer.decode(targets) for targets in batch["targets"]]
    assert decoded == ["a dog sle", "two peopl"]  # lower-cased, cut to 10 - 1 bytes
    assert batch["inputs"].shape == (2, 16, 16, 3) and batch["targets"].shape == (2, 10)
    # Bytes then EOS: the weights cover exactly the caption and its EOS.
    for targets, weights in zip(batch["targets"], batch["weights"], strict=True):
        eos = list(targets).index(attn.data.EOS_ID)
        assert weights[: eos + 1].all() and not weights[eos + 1 :].any()


def test_mnist_and_cifar_records_are_read_without_tensorflow(tmp_path):
    images_raw = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    labels_raw = np.asarray([7, 0, 3], np.uint8)
    image_file, label_file = tmp_path / "images.gz", tmp_path / "labels.gz"
    image_file.write_bytes(gzip.compress(bytes(16) + images_raw.tobytes()))
    label_file.write_bytes(gzip.compress(bytes(8) + labels_raw.tobytes()))
    mnist = list(IMAGE_OVERRIDES["mnist"]["_generate_examples"](None, 3, image_file, label_file))
    assert [record["label"] for _, record in mnist] == [7, 0, 3]
    np.testing.assert_array_equal(mnist[1][1]["image"][..., 0], images_raw[1])

    chw = np.random.default_rng(1).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    cifar_file = tmp_path / "data_batch_1.bin"
    cifar_file.write_bytes(
        b"".join(bytes([label]) + image.tobytes() for label, image in zip((4, 9), chw, strict=True))
    )

    builder = types.SimpleNamespace(_cifar_info=types.SimpleNamespace(label_keys=["label"]))
    cifar = list(IMAGE_OVERRIDES["cifar10"]["_generate_examples"](builder, "train_", [cifar_file]))
    assert [(record["label"], record["id"]) for _, record in cifar] == [
        (4, "train_00000"),
        (9, "train_00001"),
    ]
    np.testing.assert_array_equal(cifar[1][1]["image"], chw[1].transpose(1, 2, 0))
