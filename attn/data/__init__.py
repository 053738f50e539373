"""Data: TFDS builders of our own tasks, catalog-dataset adapters, tokenizers, batching.

    import attn.data
    task = attn.data.get_task({"name": "reverse", "batch_size": 64})
    batch = task.train_batch(step)          # {"inputs", "targets", "weights"} numpy arrays
    for batch in task.eval_batches("test"):
        ...

Reading needs tensorflow-datasets, array_record and grain; never TensorFlow.
"""

from attn.data.datasets import (
    COMMON_DEFAULTS,
    DATASETS,
    DatasetSpec,
    audio_shape_of,
    check_config,
    get_task,
    image_shape_of,
    resolve_data_dir,
)
from attn.data.task import Task
from attn.data.tokenizers import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    ByteTokenizer,
    ClassLabels,
    SymbolTokenizer,
    Tokenizer,
)

__all__ = [
    "BOS_ID",
    "COMMON_DEFAULTS",
    "DATASETS",
    "EOS_ID",
    "PAD_ID",
    "ByteTokenizer",
    "ClassLabels",
    "DatasetSpec",
    "SymbolTokenizer",
    "Task",
    "Tokenizer",
    "audio_shape_of",
    "check_config",
    "get_task",
    "image_shape_of",
    "resolve_data_dir",
]
