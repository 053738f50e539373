"""Time spoken_strings: generating the dataset (eSpeak NG, noise, array_record) and computing
the log-mel features of its train split (the Task's cache).

    python -m benchmarks.speech_data --num_train 20000

Prints the wall time of each stage, the CPUs used and the utterances' frame counts. Generation
runs in a fresh temporary data_dir (removed afterwards) unless --data_dir is given.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

import attn.data


def run(num_train: int, data_dir: str) -> dict[str, float]:
    config = {
        "name": "spoken_strings",
        "num_train": num_train,
        "data_dir": data_dir,
        "batch_size": 32,
    }
    start = time.perf_counter()
    task = attn.data.get_task(config)
    generated = time.perf_counter()
    task.train_batch(0)  # cache=True: computes every train utterance's features once
    featurised = time.perf_counter()
    lengths = np.concatenate([batch["input_lengths"] for batch in task.eval_batches("train")])
    lengths = lengths[: task.num_examples("train")]  # without the last batch's padding rows
    return {
        "generate_s": generated - start,
        "features_s": featurised - generated,
        "frames_median": float(np.median(lengths)),
        "frames_p99": float(np.percentile(lengths, 99)),
        "frames_max": float(lengths.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_train", type=int, default=20_000)
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args()
    print(f"CPUs available: {len(os.sched_getaffinity(0))}, load average {os.getloadavg()}")
    if args.data_dir:
        results = run(args.num_train, args.data_dir)
    else:
        with tempfile.TemporaryDirectory() as data_dir:
            results = run(args.num_train, data_dir)
    for key, value in results.items():
        print(f"{key}: {value:.1f}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
