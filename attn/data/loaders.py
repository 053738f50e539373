"""How each catalog name becomes a :class:`~attn.data.task.Task`: its sources, tokenizers,
shapes and the preprocessing of one record into fixed-length arrays.

Loaders take the dataset's own options, the data_dir and the Task's keyword fields
(name, config, batch_size, eval_batch_size, seed, cache).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from attn.data import dates, listops, mqar, sequence_tasks
from attn.data.builder import SPLITS, GeneratedBuilder, SizedConfig
from attn.data.locks import preparation_lock
from attn.data.task import Task, pad_to
from attn.data.tfds_text import NO_GCS, LmWindows, as_bytes, byte_ids, load_catalog_splits
from attn.data.tokenizers import ByteTokenizer, ClassLabels

__all__ = [
    "config_fields",
    "generated_splits",
    "load_dates",
    "load_imdb_reviews",
    "load_listops",
    "load_mqar",
    "load_sequence",
    "load_tiny_shakespeare",
]


def generated_splits(
    builder_cls: type[GeneratedBuilder], config: SizedConfig, data_dir: str
) -> dict[str, Any]:
    """Split name -> tfds data source of our builder at ``config``, generated if missing."""
    # tfds refuses a config object that is not the class's own but shares its name; the name
    # spells out every field, so passing the name selects an identical config.
    registered = {c.name for c in builder_cls.BUILDER_CONFIGS}
    # Generates on first use (nothing to download), then just opens the array_record files.
    with preparation_lock(data_dir, f"{builder_cls.name}-{config.name}"):
        sources = tfds.data_source(
            builder_cls.name,
            split=list(SPLITS),
            data_dir=data_dir,
            builder_kwargs={
                "config": config.name if config.name in registered else config,
                "file_format": "array_record",
            },
            download_and_prepare_kwargs={"download_config": NO_GCS},
        )
    return dict(zip(SPLITS, sources, strict=True))


def config_fields(config_cls: type[SizedConfig]) -> dict[str, Any]:
    """The size fields of a builder config and their defaults (the dataset's config keys)."""
    base = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
    return {f.name: f.default for f in dataclasses.fields(config_cls) if f.name not in base}


def make_config(config_cls: type[SizedConfig], options: dict[str, Any]) -> SizedConfig:
    """The builder config for ``options`` (validated by the config)."""
    return config_cls(**{key: options[key] for key in config_fields(config_cls)})


# Preprocessing: one record -> fixed-length int32 inputs/targets and float32 weights.


def _per_token(record: Mapping[str, Any], *, input_length: int, target_length: int) -> dict:
    targets = pad_to(record["targets"], target_length)
    return {
        "inputs": pad_to(record["inputs"], input_length),
        "targets": targets,
        "weights": (targets != 0).astype(np.float32),
    }


def _mqar_record(record: Mapping[str, Any], *, length: int) -> dict:
    return {
        "inputs": pad_to(record["inputs"], length),
        "targets": pad_to(record["targets"], length),
        "weights": pad_to(record["query_mask"], length).astype(np.float32),
    }


def _classify_record(record: Mapping[str, Any], *, length: int) -> dict:
    return {
        "inputs": pad_to(record["inputs"], length),
        "targets": np.int32(record["targets"]),
        "weights": np.float32(1.0),
    }


def _imdb_record(record: Mapping[str, Any], *, length: int) -> dict:
    ids = ByteTokenizer().encode_bytes(as_bytes(record["text"]))
    return {
        "inputs": pad_to(ids, length, truncate=True),
        "targets": np.int32(record["label"]),
        "weights": np.float32(1.0),
    }


def load_sequence(
    builder_cls: type[GeneratedBuilder], options: dict, data_dir: str, **task_kwargs: Any
) -> Task:
    config = make_config(sequence_tasks.SequenceConfig, options)
    tokenizer = sequence_tasks.symbol_tokenizer(config.num_symbols)
    return Task(
        kind="tag",
        input_vocab_size=tokenizer.vocab_size,
        target_vocab_size=tokenizer.vocab_size,
        input_length=config.length,
        target_length=config.length,
        tokenizer=tokenizer,
        target_tokenizer=tokenizer,
        splits=generated_splits(builder_cls, config, data_dir),
        preprocess=functools.partial(
            _per_token, input_length=config.length, target_length=config.length
        ),
        **task_kwargs,
    )


def load_mqar(options: dict, data_dir: str, **task_kwargs: Any) -> Task:
    config = make_config(mqar.MqarConfig, options)
    tokenizer = mqar.mqar_tokenizer(config.vocab_size)
    return Task(
        kind="lm",
        input_vocab_size=tokenizer.vocab_size,
        target_vocab_size=tokenizer.vocab_size,
        input_length=config.seq_len,
        target_length=config.seq_len,
        tokenizer=tokenizer,
        target_tokenizer=tokenizer,
        splits=generated_splits(mqar.AttnMqar, config, data_dir),
        preprocess=functools.partial(_mqar_record, length=config.seq_len),
        **task_kwargs,
    )


def load_dates(options: dict, data_dir: str, **task_kwargs: Any) -> Task:
    config = make_config(dates.DatesConfig, options)
    tokenizer, target_tokenizer = dates.date_input_tokenizer(), dates.date_target_tokenizer()
    return Task(
        kind="seq2seq",
        input_vocab_size=tokenizer.vocab_size,
        target_vocab_size=target_tokenizer.vocab_size,
        input_length=dates.INPUT_LENGTH,
        target_length=dates.TARGET_LENGTH,
        tokenizer=tokenizer,
        target_tokenizer=target_tokenizer,
        splits=generated_splits(dates.AttnDates, config, data_dir),
        preprocess=functools.partial(
            _per_token, input_length=dates.INPUT_LENGTH, target_length=dates.TARGET_LENGTH
        ),
        **task_kwargs,
    )


def load_listops(options: dict, data_dir: str, **task_kwargs: Any) -> Task:
    config = make_config(listops.ListopsConfig, options)
    labels = ClassLabels([str(value) for value in range(10)])
    return Task(
        kind="classify",
        input_vocab_size=listops.listops_tokenizer().vocab_size,
        target_vocab_size=labels.vocab_size,
        input_length=config.max_length,
        target_length=1,
        tokenizer=listops.listops_tokenizer(),
        target_tokenizer=labels,
        splits=generated_splits(listops.AttnListops, config, data_dir),
        preprocess=functools.partial(_classify_record, length=config.max_length),
        **task_kwargs,
    )


def load_tiny_shakespeare(options: dict, data_dir: str, **task_kwargs: Any) -> Task:
    seq_len = options["seq_len"]
    splits = ("train", "validation", "test")
    sources = load_catalog_splits("tiny_shakespeare", splits, data_dir)
    tokenizer = ByteTokenizer()
    return Task(
        kind="lm",
        input_vocab_size=tokenizer.vocab_size,
        target_vocab_size=tokenizer.vocab_size,
        input_length=seq_len,
        target_length=seq_len,
        tokenizer=tokenizer,
        target_tokenizer=tokenizer,
        # Each split is one example holding the whole text: cut it into windows in memory.
        splits={
            split: LmWindows(byte_ids([source[i] for i in range(len(source))]), seq_len)
            for split, source in sources.items()
        },
        **task_kwargs,
    )


def load_imdb_reviews(options: dict, data_dir: str, **task_kwargs: Any) -> Task:
    max_length = options["max_length"]
    tokenizer = ByteTokenizer()
    labels = ClassLabels(["neg", "pos"])
    return Task(
        kind="classify",
        input_vocab_size=tokenizer.vocab_size,
        target_vocab_size=labels.vocab_size,
        input_length=max_length,
        target_length=1,
        tokenizer=tokenizer,
        target_tokenizer=labels,
        splits=load_catalog_splits("imdb_reviews", ("train", "test"), data_dir),
        preprocess=functools.partial(_imdb_record, length=max_length),
        **task_kwargs,
    )
