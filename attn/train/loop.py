"""``train_and_evaluate``: the optax training loop with orbax checkpoints, logs and plots.

Everything a step does is a pure function of ``(state, step)``: the batch is
``task.train_batch(step)`` and the dropout key is ``fold_in(seed, step)``, so a run killed at
any moment and resumed from its last checkpoint ends with exactly the parameters of an
uninterrupted run.

The host does not make the devices wait: batches are read and copied to the devices in a
background thread, and a step's metrics are read only once the next steps are dispatched. The
compiled step itself refuses an update whose loss or gradient norm is not finite (it returns
the old state and a flag), and the parameters are checked before anything is logged, evaluated
or saved, so no saved state is ever bad; the host stops when it reads the flag, a few steps
late.
"""

from __future__ import annotations

import collections
import functools
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from attn import data, models
from attn.models.options import with_values
from attn.train import config as config_lib
from attn.train import distributed
from attn.train import metrics as metrics_lib
from attn.train import sharding as sharding_lib
from attn.train import workdir as workdir_lib
from attn.train.caption_metrics import CaptionScores
from attn.train.checkpoints import Checkpoints
from attn.train.image_attention import image_attention_plots
from attn.train.interrupt import TrainingInterrupted, stop_requests
from attn.train.plots import plot_attention, plot_curves
from attn.train.prefetch import Prefetcher
from attn.train.speech_metrics import TranscriptScores
from attn.train.speech_plots import speech_attention_plots
from attn.train.writer import MetricWriter, read_metrics


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss or update; it was not applied and the last good
    checkpoint is kept."""


class StoppedByCallback(RuntimeError):
    """``on_eval`` asked the run to stop (a sweep's pruner); what was saved stays."""


# Called after each evaluation with (step, eval record); True stops the run.
EvalCallback = Callable[[int, dict[str, Any]], bool]


class Experiment:
    """The parts of a run that training, evaluation and plotting share."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str | Path,
        *,
        read_only: bool = False,
        checked: config_lib.Checked | None = None,
    ):
        """``read_only``: only read the workdir's checkpoints (evaluating or plotting it).
        ``checked``: what :func:`attn.train.config.validate` returned for ``config``, if the
        caller validated it already."""
        checked = checked or config_lib.validate(config)
        self.config = config
        self.workdir = Path(workdir)
        self.task = data.get_task(config.data)
        # All devices of all processes, see attn.train.sharding: batches split over all of
        # them, parameters and optimizer state whole or split over "fsdp".
        self.mesh = sharding_lib.make_mesh(checked.train.mesh)
        self.batch_sharding = NamedSharding(self.mesh, sharding_lib.BATCH)
        seed = config.train.seed
        self.options = checked.model
        self.tx, self.learning_rate = checked.optimizer, checked.learning_rate
        # What the train step takes as arguments rather than constants, so that a sweep can
        # vmap it over trials (see attn.train.sweep.vmapped): the dropout key's base and the
        # float model options that vary (none in a run of its own).
        self.trial_values: dict[str, Any] = {"rng": jax.random.key(seed + 2), "model": {}}

        def build() -> nnx.Module:
            return models.build_model(
                checked.model, self.task, rngs=nnx.Rngs(params=seed, dropout=seed + 1)
            )

        def initial_state() -> tuple[dict[str, Any], Any]:
            _, params, rest = nnx.split(build(), nnx.Param, ...)
            return {"params": params, "opt_state": self.tx.init(params), "step": jnp.int32(0)}, rest

        # Shapes first, then every array made where it lives: a model too big for one device
        # is never whole on one.
        self.graphdef, abstract_params, _ = nnx.split(nnx.eval_shape(build), nnx.Param, ...)
        self.state_shardings = sharding_lib.state_shardings(
            self.tx,
            abstract_params,
            sharding_lib.parameter_shardings(abstract_params, self.mesh),
            self.mesh,
        )
        whole = NamedSharding(self.mesh, P())
        self.state, rest = jax.jit(initial_state, out_shardings=(self.state_shardings, whole))()
        # The other variables (random streams' keys and counts) as this process's own copy:
        # the steps take them as constants, and host-side calls (plots) compute with them.
        self.rest = jax.tree.map(lambda x: x.addressable_data(0), rest)
        self._host_params: tuple[int, Any] | None = None  # (step, params), see host_params
        self.checkpoints = Checkpoints(
            self.workdir,
            max_to_keep=config.train.max_to_keep,
            best_metric=config.train.best_metric,
            best_mode=config.train.best_mode,
            read_only=read_only,
        )
        # The state keeps its layout from step to step (XLA would choose one otherwise).
        whole_outputs = NamedSharding(self.mesh, P())
        self._train_step = jax.jit(
            self._train_step_fn,
            donate_argnums=0,
            out_shardings=(self.state_shardings, whole_outputs, whole_outputs),
        )
        self._eval_step = jax.jit(self._eval_step_fn)
        self._params_finite = jax.jit(self._all_finite)
        if config.train.sample_tokens:
            # Sampling first runs at the first evaluation: trace it now (shapes only), so that
            # e.g. a prompt plus sample_tokens longer than a learned position table fails here.
            try:
                jax.eval_shape(self._sample, self.state["params"], jnp.int32(0))
            except ValueError as error:
                raise ValueError(
                    f"train.sample_tokens={config.train.sample_tokens} with train.sample_prompt="
                    f"{config.train.sample_prompt!r}: {error}"
                ) from None

    # ------------------------------------------------------------------ pure steps

    def model(self, params: Any, model_values: dict[str, Any] | None = None) -> nnx.Module:
        """The model with ``params``; ``model_values`` replace float options (dotted names, see
        :func:`attn.models.options.float_values`), e.g. a vmapped trial's traced dropout rate."""
        if not model_values:
            # A copy: the step reseeds its dropout streams, which must not touch self.rest.
            return nnx.merge(self.graphdef, params, self.rest, copy=True)
        # Built anew around the traced values: their initial parameters are traced too, and
        # XLA drops them as unused once `params` replace them.
        options = with_values(self.options, model_values)
        model = models.build_model(options, self.task, rngs=nnx.Rngs(params=0, dropout=1))
        nnx.update(model, params)
        return model

    def _loss_sums(
        self,
        params: Any,
        batch: dict[str, jax.Array],
        rng: jax.Array,
        model_values: dict[str, Any],
    ):
        model = self.model(params, model_values)
        nnx.reseed(model, dropout=rng, policy=functools.partial(_stream_key, rng))
        logits = model(batch, deterministic=False)
        losses = optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), batch["targets"]
        )
        return jnp.sum(losses * batch["weights"]), jnp.sum(batch["weights"])

    def _train_step_fn(
        self, state: dict[str, Any], batch: dict[str, jax.Array], trial_values: dict[str, Any]
    ):
        steps = self.config.train.accumulation_steps
        rng = jax.random.fold_in(trial_values["rng"], state["step"])

        def accumulate(carry, micro):
            grads, loss_sum, weight_sum = carry
            index, micro_batch = micro
            (micro_loss, micro_weight), micro_grads = jax.value_and_grad(
                self._loss_sums, has_aux=True
            )(state["params"], micro_batch, jax.random.fold_in(rng, index), trial_values["model"])
            grads = jax.tree.map(jnp.add, grads, micro_grads)
            return (grads, loss_sum + micro_loss, weight_sum + micro_weight), None

        micro_batches = jax.tree.map(
            lambda x: x.reshape(steps, x.shape[0] // steps, *x.shape[1:]), batch
        )
        zeros = jax.tree.map(jnp.zeros_like, state["params"])
        (grads, loss_sum, weight_sum), _ = jax.lax.scan(
            accumulate, (zeros, 0.0, 0.0), (jnp.arange(steps), micro_batches)
        )
        # Gradients of summed losses divided by the total weight: the exact mean over the whole
        # batch however it is split into micro-batches.
        weight_sum = jnp.maximum(weight_sum, 1e-9)
        grads = jax.tree.map(lambda g: g / weight_sum, grads)
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        new_state = {
            "params": optax.apply_updates(state["params"], updates),
            "opt_state": opt_state,
            "step": state["step"] + 1,
        }
        metrics = {"loss": loss_sum / weight_sum, "grad_norm": optax.tree.norm(grads)}
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
        # A bad update is never applied: the state stays the last good one, so the host may
        # read `finite` a few steps later. (Parameters that a finite gradient overflows are
        # rarer and cost a pass over all of them: they are checked only before each save.)
        new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
        return new_state, metrics, finite

    @staticmethod
    def _all_finite(params: Any) -> jax.Array:
        return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)]))

    def _eval_step_fn(
        self, params: Any, batch: dict[str, jax.Array]
    ) -> tuple[dict[str, jax.Array], jax.Array]:
        """The batch's metric sums and the model's predictions (greedy for seq2seq)."""
        model = self.model(params)
        logits = model(batch, deterministic=True)
        predictions = model.predict(batch)
        sums = metrics_lib.metric_sums(logits, predictions, batch["targets"], batch["weights"])
        return sums, predictions

    # ------------------------------------------------------------------ host side

    def shard(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """``batch`` (the whole global batch, the same on every process) split over the mesh;
        each process places the rows its devices hold."""
        return {
            name: jax.make_array_from_callback(
                value.shape, self.batch_sharding, lambda index, value=value: value[index]
            )
            for name, value in batch.items()
        }

    def process_rows(self, batch_size: int) -> slice:
        """The rows of a global batch of ``batch_size`` that this process's devices hold (one
        contiguous block: ``jax.make_mesh`` orders the devices by process)."""
        blocks = [
            range(batch_size)[index[0]]
            for index in self.batch_sharding.addressable_devices_indices_map((batch_size,)).values()
        ]
        start, stop = min(b.start for b in blocks), max(b.stop for b in blocks)
        if sum(len(b) for b in set(blocks)) != stop - start:
            raise ValueError(f"this process's devices hold scattered rows of the batch: {blocks}")
        return slice(start, stop)

    def train_batch(self, step: int) -> dict[str, jax.Array]:
        """Global train batch ``step`` on the mesh. Each process reads only its own rows of
        ``task.train_batch(step)``, so the global batch is the one a single process reads."""
        size = self.config.data.batch_size
        rows = self.task.train_batch(step, rows=self.process_rows(size))
        return {
            name: jax.make_array_from_process_local_data(
                self.batch_sharding, value, (size, *value.shape[1:])
            )
            for name, value in rows.items()
        }

    def host_params(self) -> Any:
        """The parameters as arrays this process computes with outside the compiled steps
        (plots, samples, caption scores). On several processes a local copy gathered from all
        of them: a collective, so every process calls it (once per step; it is kept)."""
        params = self.state["params"]
        if all(x.is_fully_addressable for x in jax.tree.leaves(params)):
            return params
        step = int(self.state["step"])
        if self._host_params is None or self._host_params[0] != step:
            gathered = multihost_utils.process_allgather(params, tiled=True)
            self._host_params = (step, jax.tree.map(jnp.asarray, gathered))
        return self._host_params[1]

    def restore(
        self, which: str = "latest", *, missing_ok: bool = False, step: int | None = None
    ) -> int:
        """Load the ``latest`` or ``best`` checkpoint (or ``step``'s) into ``self.state``;
        returns its step.

        Without a checkpoint: step 0 (the initial state) if ``missing_ok``, else a ValueError.
        """
        abstract = jax.tree.map(ocp_abstract, self.state)
        restored = self.checkpoints.restore(abstract, which=which, step=step)
        if restored is None:
            if not missing_ok:
                wanted = which if step is None else f"step {step}"
                raise ValueError(
                    f"no {wanted} checkpoint in {self.workdir / 'checkpoints' / which}"
                )
            return 0
        step, self.state = restored  # placed as the abstract state's shardings say
        return step

    def _text_scores(self) -> CaptionScores | TranscriptScores | None:
        """What scores the decoded text of a seq2seq task over images (captions) or audio
        (transcripts) on the host; None for other tasks."""
        if self.task.kind != "seq2seq":
            return None
        if self.task.image_shape is not None:
            return CaptionScores(self.task.target_tokenizer, self.model(self.host_params()))
        if self.task.audio_shape is not None:
            return TranscriptScores(self.task.target_tokenizer, self.model(self.host_params()))
        return None

    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Loss, accuracy and sequence accuracy over ``split`` (``train.eval_batches`` at
        most); for captions also BLEU-4 and attention localisation, for transcripts CER,
        WER and the alignment's monotonicity."""
        totals: dict[str, float] = {}
        scores = self._text_scores()
        for batch in self.task.eval_batches(split, max_batches=self.config.train.eval_batches):
            sums, predictions = self._eval_step(self.state["params"], self.shard(batch))
            for name, value in sums.items():
                totals[name] = totals.get(name, 0.0) + float(value)
            if scores is not None:
                scores.update(batch, multihost_utils.process_allgather(predictions, tiled=True))
        return {**metrics_lib.finalize(totals), **(scores.result() if scores else {})}

    def plot(self, split: str = "test", tag: str = "", count: int | None = None) -> list[Path]:
        """Attention maps of the first ``count`` (default ``train.plot_examples``) examples of
        ``split``."""
        batch = next(iter(self.task.eval_batches(split, max_batches=1)))
        count = self.config.train.plot_examples if count is None else count
        count = min(count, len(batch["inputs"]))
        return self.plot_batch({name: value[:count] for name, value in batch.items()}, tag)

    def plot_batch(self, batch: dict[str, np.ndarray], tag: str = "") -> list[Path]:
        """Attention pictures of each example of ``batch``: maps with tokens on the axes, or
        for images the attention drawn over the image."""
        if self.task.image_shape is not None:
            return image_attention_plots(self, batch, tag)
        if self.task.audio_shape is not None:
            return speech_attention_plots(self, batch, tag)
        model = self.model(self.host_params())
        maps = model.attention_maps({name: jnp.asarray(value) for name, value in batch.items()})
        paths = []
        for index in range(len(batch["inputs"])):
            input_tokens = self.task.tokenizer.token_strings(batch["inputs"][index])
            target_tokens = self.task.target_tokenizer.token_strings(
                np.ravel(batch["targets"][index])
            )
            for name, weights in maps.items():
                queries = input_tokens if weights.shape[-2] == len(input_tokens) else target_tokens
                keys = input_tokens if weights.shape[-1] == len(input_tokens) else target_tokens
                filename = f"attention_{name.replace('/', '_')}_example{index}{tag}.png"
                paths.append(
                    plot_attention(
                        np.asarray(weights[index]),
                        queries,
                        keys,
                        self.workdir / "plots" / filename,
                        title=f"{self.task.name}: {name} (example {index})",
                    )
                )
        return paths

    def _sample(self, params: Any, step: jax.Array) -> jax.Array:
        """``train.sample_prompt`` continued by ``train.sample_tokens`` sampled tokens."""
        prompt = self.task.tokenizer.encode(self.config.train.sample_prompt) or [1]
        return self.model(params).sample(
            jnp.asarray([prompt], jnp.int32),
            self.config.train.sample_tokens,
            jax.random.fold_in(self.trial_values["rng"], step),
        )

    def sample_text(self) -> str:
        tokens = self._sample(self.host_params(), int(self.state["step"]))
        return self.task.tokenizer.decode(np.asarray(tokens[0]).tolist())

    def close(self) -> None:
        self.checkpoints.close()


def _stream_key(rng: jax.Array, path: tuple, _key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The key of the dropout stream at ``path``: ``rng`` folded with a hash of the path alone.

    (nnx.reseed's default hands out keys in the order it meets the streams, so one more stream
    shifts the others' masks: a module whose traced rate may be 0 keeps a stream that a
    concrete 0 drops, and a vmapped trial would draw other masks than its run alone.)
    """
    if shape:
        raise ValueError(f"dropout stream {path} holds keys of shape {shape}; expected one key")
    return jax.random.fold_in(rng, zlib.crc32("/".join(map(str, path)).encode()) & 0x7FFFFFFF)


def ocp_abstract(x: Any) -> Any:
    """Shape/dtype/sharding stand-in for restoring ``x``."""
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))


def is_due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


class TrainLog:
    """The host side of the train metrics, summed into one ``metrics.jsonl`` record per window.

    A step's values are read only once ``READ_BEHIND`` later steps are dispatched, so the
    devices always have work queued while the host waits for a value, reads the next batch or
    writes logs (a stall of the host, e.g. waiting for the GIL, is absorbed by the queue).
    """

    READ_BEHIND = 3

    def __init__(self, experiment: Experiment, writer: MetricWriter, bar: tqdm | None):
        """``bar``: advanced once per step read (None: a caller keeps its own bar)."""
        self.experiment, self.writer, self.bar = experiment, writer, bar
        self.pending: collections.deque[tuple[int, dict[str, jax.Array], jax.Array]] = (
            collections.deque()
        )
        self.sums: dict[str, float] = {}
        self.count = 0
        self.started = time.perf_counter()

    def dispatched(self, step: int, metrics: dict[str, jax.Array], finite: jax.Array) -> None:
        """Step ``step`` was dispatched; read the values of the steps far enough behind it."""
        self.pending.append((step, metrics, finite))
        while len(self.pending) > self.READ_BEHIND:
            self._read(*self.pending.popleft())

    def flush(self) -> None:
        """Read every dispatched step's values and check the parameters: what is then logged,
        evaluated or saved is good. Waits for the last step."""
        while self.pending:
            self._read(*self.pending.popleft())
        if not self.experiment._params_finite(self.experiment.state["params"]):
            self.diverged(int(self.experiment.state["step"]), "the parameters became non-finite")

    def diverged(self, step: int, what: str) -> NoReturn:
        checkpoints = self.experiment.checkpoints
        raise NonFiniteLossError(
            f"{what} at step {step}; training stopped. The last good checkpoint (step "
            f"{checkpoints.latest_step()}) is kept in "
            f"{self.experiment.workdir / 'checkpoints' / 'latest'}. Lower optim.learning_rate "
            "or set optim.grad_clip_norm."
        )

    def _read(self, step: int, metrics: dict[str, jax.Array], finite: jax.Array) -> None:
        self.take(step, *jax.device_get((metrics, finite)))

    def take(self, step: int, values: dict[str, Any], finite: Any) -> None:
        """Add step ``step``'s values read from the devices (raises if they are not finite)."""
        if not finite:
            self.diverged(
                step,
                f"loss became {values['loss']} (gradient norm {values['grad_norm']}); that update "
                "was not applied",
            )
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)

    def write(self, step: int) -> dict[str, float]:
        """The record of the steps since the last one, written to the logs; returns it."""
        elapsed = time.perf_counter() - self.started
        record = {name: value / self.count for name, value in self.sums.items()}
        record["learning_rate"] = self.experiment.learning_rate(step - 1)
        record["steps_per_second"] = self.count / max(elapsed, 1e-9)
        record["examples_per_second"] = (
            record["steps_per_second"] * self.experiment.config.data.batch_size
        )
        self.writer.write(step, "train", record)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
        self.sums, self.count, self.started = {}, 0, time.perf_counter()
        return record


def evaluate_and_log(experiment: Experiment, step: int, writer: MetricWriter) -> dict[str, Any]:
    """Evaluate, log and plot at ``step``; keep the state in ``best/`` if it is the best.

    Every process computes the same evaluation (each its devices' share of every batch) and
    takes part in the save; process 0 alone writes the logs and plots."""
    train = experiment.config.train
    evaluation = experiment.evaluate("test")
    experiment.host_params()  # on every process: the copy plots and samples use is gathered
    if train.sample_tokens:
        evaluation["sample"] = experiment.sample_text()
        tqdm.write(f"step {step} sample: {evaluation['sample']!r}")
    writer.write(step, "eval", evaluation)
    experiment.checkpoints.save_if_best(
        step, experiment.state, {train.best_metric: evaluation[train.best_metric]}
    )
    if not distributed.is_primary():
        return evaluation
    experiment.plot("test")
    plot_curves(read_metrics(experiment.workdir), experiment.workdir / "plots" / "curves.png")
    tqdm.write(f"step {step}: eval {_short(evaluation)}")
    return evaluation


def stop_if_asked(
    experiment: Any,
    step: int,
    evaluation: dict[str, Any],
    on_eval: EvalCallback | None,
    save_due: bool,
) -> None:
    """After an evaluation: if ``on_eval`` asks to stop (a sweep's pruner), save the state
    when a checkpoint is due and raise :class:`StoppedByCallback`."""
    if on_eval is not None and on_eval(step, evaluation):
        if save_due:
            experiment.checkpoints.save(step, experiment.state)
        raise StoppedByCallback(f"stopped after the evaluation of step {step}")


def save_and_stop(experiment: Any, step: int) -> NoReturn:
    """After Ctrl-C: save the state of ``step`` (the last one finished) and stop."""
    tqdm.write(
        f"Ctrl-C: saving a checkpoint of step {step} (Ctrl-C again quits without it)",
        file=sys.stderr,
    )
    path = experiment.checkpoints.save(step, experiment.state)
    raise TrainingInterrupted(
        f"interrupted at step {step}; checkpoint saved in {path}. Run the same command again "
        "to resume.",
        step=step,
        path=path,
    )


def _train(
    experiment: Experiment, start: int, on_eval: EvalCallback | None = None
) -> dict[str, Any]:
    """Steps ``start + 1 ..`` with their logs, evaluations and checkpoints; the last records.

    On Ctrl-C: a checkpoint of the last finished step, then :class:`TrainingInterrupted`.
    """
    train, workdir = experiment.config.train, experiment.workdir
    last = train.num_steps
    final: dict[str, Any] = {}
    primary = distributed.is_primary()
    writer = MetricWriter(workdir, resume_step=start, enabled=primary)
    bar = tqdm(
        total=last,
        initial=start,
        desc=workdir.name,
        unit="step",
        dynamic_ncols=True,
        disable=not primary,
    )
    log = TrainLog(experiment, writer, bar)
    # Batch i + 1 is read and placed while the devices run step i.
    batches = Prefetcher(experiment.train_batch, range(start, last))
    try:
        with stop_requests() as stop, batches:
            step = start
            while step < last and not stop.is_set():
                step += 1
                experiment.state, *outputs = experiment._train_step(
                    experiment.state, next(batches), experiment.trial_values
                )
                log.dispatched(step, *outputs)
                log_due, eval_due, save_due = (
                    is_due(step, every, last)
                    for every in (train.log_every, train.eval_every, train.checkpoint_every)
                )
                if log_due or eval_due or save_due:
                    log.flush()  # what is logged, evaluated or saved is checked first
                if log_due:
                    final["train"] = log.write(step)
                if eval_due:
                    final["eval"] = evaluate_and_log(experiment, step, writer)
                    stop_if_asked(experiment, step, final["eval"], on_eval, save_due)
                if save_due:
                    experiment.checkpoints.save(step, experiment.state)
            if step < last:  # stopped by Ctrl-C
                log.flush()
                save_and_stop(experiment, step)
    finally:
        bar.close()
        writer.close()
    return final


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    on_eval: EvalCallback | None = None,
) -> dict[str, Any]:
    """Train ``config`` in ``workdir`` (resuming if it holds checkpoints); return final metrics.

    The workdir gets ``config.json``, ``metrics.jsonl``, ``tensorboard/``, ``checkpoints/``
    (``latest/`` for resuming, ``best/`` by ``train.best_metric``) and ``plots/``. The run holds
    the workdir's lock throughout, and resumes only if ``config`` differs from the saved one in
    run-length and logging keys alone (see :mod:`attn.train.workdir`). Raises
    :class:`TrainingInterrupted` (after saving a checkpoint) on Ctrl-C, and
    :class:`StoppedByCallback` when ``on_eval(step, eval_record)`` returns True.

    Under ``jax.distributed`` (see :mod:`attn.train.distributed`) every process calls it with
    the same config and workdir (on a filesystem they share); they train one model together.
    """
    # First: a config that one process alone refuses would leave the others waiting.
    distributed.check_same_config(config)
    checked = config_lib.validate(config)  # before the workdir is touched
    return run_in_workdir(
        config,
        workdir,
        lambda path: Experiment(config, path, checked=checked),
        lambda experiment, start: _train(experiment, start, on_eval),
    )


def run_in_workdir(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    build: Callable[[Path], Any],
    train: Callable[[Any, int], dict[str, Any]],
) -> dict[str, Any]:
    """A run's workdir protocol around ``train(experiment, start_step)`` (a training loop):
    the lock, the resume check, ``config.json``, the experiment ``build(workdir)`` with its
    latest checkpoint restored, then the report of :func:`report_run`. Shared by the
    supervised and the RL loop. With several processes, process 0 holds the lock and writes
    ``config.json`` for all of them."""
    workdir = Path(workdir)
    workdir_lib.require_directory(workdir, create=True)
    config_path = workdir / workdir_lib.CONFIG_FILE
    with workdir_lib.RunLock(workdir):
        workdir_lib.check_resumable(config, config_path)
        experiment = build(workdir)
        try:
            if distributed.is_primary():
                config_lib.save_json(config, config_path)
            start = experiment.restore(missing_ok=True)
            final = train(experiment, start)
        finally:
            experiment.close()
    return report_run(config, workdir, final, start)


def report_run(
    config: ml_collections.ConfigDict, workdir: Path, final: dict[str, Any], start: int
) -> dict[str, Any]:
    """``final`` (the last train and eval records of a run that started at step ``start``) with
    the best eval record added from the logs, printed in one line."""
    train = config.train
    if "eval" not in final and start >= train.num_steps:
        final["eval"] = next(
            (r for r in reversed(read_metrics(workdir)) if r["split"] == "eval"), {}
        )
    best = best_record(read_metrics(workdir), train.best_metric, train.best_mode)
    final["best"] = best
    print(
        f"done: {workdir} | best eval {train.best_metric} = "
        f"{best.get(train.best_metric, float('nan')):.4f} at step {best.get('step')} | "
        f"final eval {_short(final.get('eval', {}))}",
        flush=True,
    )
    return final


def best_record(records: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any]:
    """The eval record of ``records`` (``metrics.jsonl`` rows) with the best ``metric`` by
    ``mode`` (``"max"`` or ``"min"``); ``{}`` if none has it."""
    scored = [r for r in records if r["split"] == "eval" and metric in r]
    if not scored:
        return {}
    pick = max if mode == "max" else min
    return pick(scored, key=lambda r: r[metric])


def _short(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
