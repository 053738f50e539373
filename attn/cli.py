"""The ``attn`` command: run experiments, evaluate and plot checkpoints, benchmark kernels.

attn run experiments/dates.py[:smoke] --workdir workdirs/dates [--config.KEY=VALUE ...]
attn run ... --coordinator HOST:PORT --num-processes N --process-id I   (one of N processes)
attn eval --workdir workdirs/dates [--split test] [--checkpoint best] [--whole-split]
attn plot --workdir workdirs/dates [--text "3rd of March 2021"] [--examples 2]
attn plot --workdir workdirs/captions [--image photo.png]
attn plot --workdir workdirs/speech_las [--audio clip.wav]
attn sweep experiments/reverse.py:smoke --workdir workdirs/sweep [--config.KEY=VALUE ...]
attn bench --lengths 1024 4096 --implementations dense chunked jax.nn [--out FILE] (see --help)

Errors in what was asked (a bad argument or config key, an unusable workdir) print one line and
exit with status 2; Ctrl-C during `attn run` saves a checkpoint and exits with status 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

CONFIG_PREFIX = "--config."
INTERRUPTED = 130  # the shell's status for a process ended by SIGINT (128 + 2)


def _split_overrides(extra: list[str]) -> list[tuple[str, str]]:
    """``--config.a.b=value`` or ``--config.a.b value`` pairs from the unparsed arguments."""
    pairs, index = [], 0
    while index < len(extra):
        argument = extra[index]
        if not argument.startswith(CONFIG_PREFIX):
            raise ValueError(
                f"unrecognized argument {argument!r} "
                "(overrides look like --config.train.num_steps=100)"
            )
        key, has_value, value = argument[len(CONFIG_PREFIX) :].partition("=")
        if not has_value:
            if index + 1 >= len(extra):
                raise ValueError(f"{argument} needs a value")
            value, index = extra[index + 1], index + 1
        pairs.append((key, value))
        index += 1
    return pairs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="train an experiment config (resumes if the workdir has checkpoints)",
        description="Train CONFIG (a file in experiments/, optionally FILE.py:ARG such as "
        ":smoke) in WORKDIR. Override any config key with --config.SECTION.KEY=VALUE; "
        "unknown keys and component names fail before anything compiles. Running again in the "
        "same workdir resumes from its latest checkpoint; then only run-length and logging keys "
        "may differ from its config.json. One run at a time holds a workdir. Ctrl-C saves a "
        "checkpoint and exits with status 130.",
    )
    run.add_argument(
        "config", help="experiment file, e.g. experiments/dates.py or experiments/dates.py:smoke"
    )
    run.add_argument(
        "--workdir",
        required=True,
        help="where config.json, metrics.jsonl, checkpoints/ and plots/ go",
    )
    # Unset: jax.distributed detects Slurm, Open MPI, Cloud TPU and Kubernetes by itself.
    run.add_argument(
        "--coordinator",
        help="HOST:PORT of process 0, for a run of several processes started by hand "
        "(default: $ATTN_COORDINATOR, or a detected cluster environment)",
    )
    run.add_argument(
        "--num-processes", help="how many processes train together ($ATTN_NUM_PROCESSES)"
    )
    run.add_argument("--process-id", help="this process's index, 0 to N-1 ($ATTN_PROCESS_ID)")

    sweep = commands.add_parser(
        "sweep",
        help="run every trial of an experiment's sweep() (vmapped where it can), then summarize",
        description="Run the trials that CONFIG's sweep(ARG) lists (dotted overrides on its "
        "get_config(ARG) and on --config.KEY=VALUE), each in WORKDIR/trials/<id>/ (a normal run "
        "workdir: attn eval/plot work on it). Trials that differ only in seeds, optimizer "
        "numbers and float model options train K at a time in one vmapped program. Running "
        "again skips finished trials, resumes partial ones and retries failed ones. Writes "
        "WORKDIR/sweep.jsonl, results.md and plots/. Several machines share a sweep through "
        "--storage postgresql://...",
    )
    sweep.add_argument("config", help="experiment file with a sweep(arg=None) function")
    sweep.add_argument("--workdir", required=True, help="the sweep's directory")
    sweep.add_argument(
        "--max-trials-per-program",
        type=int,
        default=8,
        help="most trials vmapped in one compiled program (default 8; 1: one run at a time)",
    )
    sweep.add_argument(
        "--max-retries", type=int, default=1, help="retries of a failed trial (default 1)"
    )
    sweep.add_argument(
        "--storage",
        help="Optuna storage shared by the workers: postgresql://... for many machines "
        "(default: a journal file WORKDIR/optuna.journal)",
    )
    sweep.add_argument(
        "--search",
        choices=("tpe",),
        help="let Optuna's TPE sampler propose --trials trials over sweep()'s distributions "
        "(sweep must return attn.train.sweep.random draws), pruned by the median rule",
    )
    sweep.add_argument("--trials", type=int, help="how many trials --search proposes")
    sweep.add_argument(
        "--shard", help="i/n: run only the i-th of n shares of the trials, without a study"
    )
    sweep.add_argument(
        "--print-commands",
        action="store_true",
        help="print one `attn run` command per trial (for Slurm arrays and other schedulers)",
    )
    sweep.add_argument(
        "--summarize", action="store_true", help="only write the summary of the trials so far"
    )

    for name, text in (
        ("eval", "metrics of a checkpoint on a split"),
        ("plot", "attention maps of a checkpoint"),
    ):
        command = commands.add_parser(
            name,
            help=text,
            description=f"{text[0].upper()}{text[1:]} (config read from WORKDIR/config.json). "
            "It only reads the checkpoints, so it may run while `attn run` trains the workdir.",
        )
        command.add_argument("--workdir", required=True, help="a workdir written by `attn run`")
        command.add_argument(
            "--checkpoint",
            choices=("best", "latest"),
            default="best",
            help="which checkpoint (default: best)",
        )
        command.add_argument("--split", default="test", help="dataset split (default: test)")
    commands.choices["eval"].add_argument(
        "--whole-split",
        action="store_true",
        help="score every example of --split (default: the first train.eval_batches batches, "
        "as the run's own evaluations)",
    )
    # Listed for `attn --help`; main() hands its arguments to the benchmark's own parser.
    commands.add_parser(
        "bench",
        help="time attention implementations (benchmarks/attention.py; see `attn bench --help`)",
    )
    plot = commands.choices["plot"]
    plot.add_argument(
        "--text",
        action="append",
        help="input text to plot (repeatable); default: sampled examples of --split",
    )
    plot.add_argument(
        "--image",
        action="append",
        help="image file to plot (repeatable; image tasks): resized to the task's image shape",
    )
    plot.add_argument(
        "--audio",
        action="append",
        help="WAV file to transcribe and plot (repeatable; speech tasks): its alignment",
    )
    plot.add_argument(
        "--examples", type=int, default=2, help="how many split examples to plot without --text"
    )
    return parser


def _load_workdir(workdir: str, checkpoint: str):
    """The workdir's experiment, read-only, with ``checkpoint`` restored, and its step."""
    from attn.train import workdir as workdir_lib

    workdir_lib.require_directory(Path(workdir), create=False)
    config = workdir_lib.read_config(Path(workdir) / workdir_lib.CONFIG_FILE)
    if "mesh" in config.train:
        from attn.models.options import as_config_dict
        from attn.train.sharding import MeshOptions

        # The run's mesh may not fit this machine; orbax reads a checkpoint onto any layout.
        config.train.mesh = as_config_dict(MeshOptions())
    experiment = _loop(config).Experiment(config, workdir, read_only=True)
    try:
        step = experiment.restore(checkpoint)
    except ValueError:
        experiment.close()
        raise
    return experiment, step


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from benchmarks.attention import main as bench

        bench(argv[1:], prog="attn bench")
        return 0
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if args.command == "run":
            return _run(args, extra)
        if args.command == "sweep":
            return _sweep(args, _split_overrides(extra))
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if args.command == "plot" and args.examples < 1:
            raise ValueError(f"--examples must be at least 1, got {args.examples}")
        experiment, step = _load_workdir(args.workdir, args.checkpoint)
        if args.command == "eval":
            if args.whole_split:
                if "env" in experiment.config:
                    raise ValueError("--whole-split: an RL run evaluates its fixed instances")
                experiment.config.train.eval_batches = None
            metrics = experiment.evaluate(args.split)
            print(
                f"{args.checkpoint} checkpoint (step {step}) on {args.split}: "
                + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            )
        else:
            paths = _plot(experiment, args)
            if not paths:
                raise ValueError(
                    "the model recorded no attention weights to plot (model.attention.variant "
                    f"{experiment.config.model.attention.get('variant')!r} forms no weight "
                    "matrix)"
                )
            print("\n".join(str(p) for p in paths))
        experiment.close()
        return 0
    except ValueError as error:
        print(f"attn {args.command}: error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, extra: list[str]) -> int:
    """``attn run``: 0 when done, 130 on Ctrl-C (after the loop saved a checkpoint)."""
    from attn.train import TrainingInterrupted, distributed, load_config
    from attn.train.config import apply_override

    # Before anything touches a device: the processes must find each other first.
    distributed.initialize(
        distributed.cluster_from(args.coordinator, args.num_processes, args.process_id)
    )
    workdir = args.workdir
    config = load_config(args.config)
    for key, value in _split_overrides(extra):
        apply_override(config, key, value)
    try:
        _loop(config).train_and_evaluate(config, workdir)
    except TrainingInterrupted as interrupted:
        print(f"attn run: {interrupted}", file=sys.stderr)
        return INTERRUPTED
    except KeyboardInterrupt:
        print(
            f"attn run: interrupted; the checkpoints in {Path(workdir) / 'checkpoints'} are "
            "complete ones (a save cut short leaves only a temporary directory)",
            file=sys.stderr,
        )
        return INTERRUPTED
    return 0


def _loop(config) -> SimpleNamespace:
    """The training loop of ``config``: the RL loop (:mod:`attn.rl`) for a config with an
    ``env`` section, else the supervised one; its ``train_and_evaluate`` and ``Experiment``."""
    if "env" in config:
        from attn.rl import RLExperiment, train_and_evaluate

        return SimpleNamespace(Experiment=RLExperiment, train_and_evaluate=train_and_evaluate)
    from attn.train import Experiment, train_and_evaluate

    return SimpleNamespace(Experiment=Experiment, train_and_evaluate=train_and_evaluate)


def _sweep(args: argparse.Namespace, overrides: list[tuple[str, str]]) -> int:
    """``attn sweep``: 0 when every trial ended (done, failed or pruned), 130 on Ctrl-C."""
    from attn.train import TrainingInterrupted, load_config
    from attn.train.sweep import runner, study
    from attn.train.sweep.trials import load_trials

    if (args.search is None) != (args.trials is None):
        raise ValueError("--search and --trials go together")
    if args.print_commands:
        trials = load_trials(args.config, overrides)
        if args.shard:
            trials = study.shard(trials, *study.parse_shard(args.shard))
        print("\n".join(study.command_lines(args.config, args.workdir, trials, overrides)))
        return 0
    if args.summarize:
        train = load_config(args.config).train
        print(runner.summarize(Path(args.workdir), train.best_metric, train.best_mode))
        return 0
    try:
        table = runner.run_sweep(
            args.config,
            Path(args.workdir),
            overrides,
            max_trials_per_program=args.max_trials_per_program,
            max_retries=args.max_retries,
            storage=args.storage,
            search_trials=args.trials,
            shard=study.parse_shard(args.shard) if args.shard else None,
        )
    except (TrainingInterrupted, KeyboardInterrupt) as interrupted:
        print(
            f"attn sweep: {interrupted or 'interrupted'}; run the same command to go on",
            file=sys.stderr,
        )
        return INTERRUPTED
    print(table)
    return 0


# The flag giving inputs of each input kind to `attn plot`, and what turns them into a batch.
_INPUT_FLAGS = {"tokens": "text", "image": "image", "audio": "audio"}


def _plot(experiment, args) -> list[Path]:
    from attn.models.task import input_kind_of

    given = [name for name in _INPUT_FLAGS.values() if getattr(args, name)]
    if "env" in experiment.config:
        if given:
            raise ValueError(f"--{given[0]}: an RL run plots rollouts of its evaluation instances")
        return experiment.plot(args.split, tag="_cli", count=args.examples)
    task = experiment.task
    kind = input_kind_of(task.image_shape, task.audio_shape)
    wanted = _INPUT_FLAGS[kind]
    wrong = [name for name in given if name != wanted]
    if wrong:
        raise ValueError(f"this task's inputs are {kind}: pass --{wanted}, not --{wrong[0]}")
    if not given:
        return experiment.plot(args.split, tag="_cli", count=args.examples)
    inputs = getattr(args, wanted)
    batch = {"text": _text_batch, "image": _image_batch, "audio": _audio_batch}[wanted](
        task, inputs
    )
    if wanted == "audio":
        # What the model hears in each file, beside the pictures of where it listened.
        predictions = experiment.model(experiment.state["params"]).predict(batch)
        for path, prediction in zip(inputs, predictions, strict=True):
            print(f"{path}: {task.target_tokenizer.decode(np.ravel(prediction))!r}")
    return experiment.plot_batch(batch, tag=f"_{wanted}")


def _audio_batch(task, paths: list[str]) -> dict:
    """A batch of the task's format from WAV files (targets empty: models predict them)."""
    from attn.data.audio_features import read_wav, utterance_features

    frames, _ = task.audio_shape
    features = [utterance_features(*read_wav(path), frames) for path in paths]
    return {
        "inputs": np.stack([inputs for inputs, _ in features]),
        "input_lengths": np.array([length for _, length in features], np.int32),
        **_empty_targets(task, len(paths)),
    }


def _image_batch(task, paths: list[str]) -> dict:
    """A batch of the task's format from image files (targets empty: models predict them)."""
    from attn.data.images import read_image_file

    inputs = np.stack([read_image_file(path, task.image_shape) for path in paths])
    return {"inputs": inputs, **_empty_targets(task, len(paths))}


def _empty_targets(task, count: int) -> dict:
    """Targets and weights of ``count`` examples of ``task`` with nothing to score."""
    target_shape = {"classify": (), "seq2seq": (task.target_length,)}.get(
        task.kind, (task.input_length,)
    )
    targets = np.zeros((count, *target_shape), np.int32)
    return {"targets": targets, "weights": np.zeros(targets.shape, np.float32)}


def _text_batch(task, texts: list[str]) -> dict:
    """A batch of the task's format from raw input texts (targets empty: models predict them)."""
    from attn.data.task import pad_to

    inputs = np.stack(
        [pad_to(task.tokenizer.encode(t), task.input_length, truncate=True) for t in texts]
    )
    return {"inputs": inputs, **_empty_targets(task, len(texts))}


if __name__ == "__main__":
    sys.exit(main())
