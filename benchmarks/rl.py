"""RL throughput: environment steps per second of a PPO update, and its rollout against its
learning part.

    python -m benchmarks.rl [--experiments rl_knapsack rl_tsp rl_cartpole] [--repeats 3]

An experiment is named by its file in ``experiments/``, optionally with ``:ARG``
(``rl_knapsack:smoke`` runs in seconds, for checking the script itself). For each (its full
config) three compiled programs are timed with interleaved repeats (medians, after warm-up):

- **rollout**: collecting one update's experience (``ppo.mode="episodes"``: ``env.num_envs``
  fresh episodes played to their end; ``"steps"``: ``ppo.rollout_length`` steps of every
  environment), with the sampling policy;
- **update**: the whole PPO update (that rollout, GAE, ``ppo.epochs`` x
  ``ppo.num_minibatches`` gradient steps);
- **greedy**: one evaluation (``env.eval_episodes`` greedy episodes).

Env-steps/s count the steps of live episodes. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import jax

from attn.rl import RLExperiment
from attn.rl.ppo import greedy_rollout
from attn.train import load_config
from benchmarks.timing import interleaved_medians

__all__ = ["main"]


def measure(spec: str, repeats: int) -> dict[str, float]:
    """Seconds per rollout, per update and per evaluation of ``experiments/SPEC``, and the
    env-steps of one update's experience."""
    name, _, arg = spec.partition(":")
    config = load_config(str(Path("experiments") / f"{name}.py") + (f":{arg}" if arg else ""))
    with tempfile.TemporaryDirectory() as workdir:
        experiment = RLExperiment(config, workdir)
        ppo, state = experiment.ppo, experiment.state
        episodes = config.env.eval_episodes
        if config.ppo.mode == "episodes":
            rollout = jax.jit(lambda s: ppo.play(s["params"], s["rng"]))
        else:
            rollout = jax.jit(lambda s: ppo.rollout(s)[1])
        # Not donated: every repeat updates the same state.
        update = jax.jit(ppo.update)
        greedy = jax.jit(
            lambda s: greedy_rollout(ppo.env, ppo.policy(s["params"]), s["rng"], episodes)[0]
        )
        env_steps = int(jax.device_get(update(state)[1]["env_steps"]))
        seconds = interleaved_medians(
            {
                "rollout": (rollout, (state,)),
                "update": (update, (state,)),
                "greedy": (greedy, (state,)),
            },
            repeats=repeats,
        )
        experiment.close()
    return {**seconds, "env_steps": env_steps}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", nargs="+", default=["rl_knapsack", "rl_tsp"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(
        f"{platform.processor() or platform.machine()}, {jax.device_count()} "
        f"{jax.default_backend()} device(s), jax {jax.__version__}\n"
    )
    print(
        "| experiment | env-steps per update | rollout s | update s | rollout / update | "
        "update env-steps/s | rollout env-steps/s | greedy eval s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.experiments:
        m = measure(spec, args.repeats)
        print(
            f"| {spec} | {m['env_steps']} | {m['rollout']:.3f} | {m['update']:.3f} | "
            f"{m['rollout'] / m['update']:.0%} | {m['env_steps'] / m['update']:.0f} | "
            f"{m['env_steps'] / m['rollout']:.0f} | {m['greedy']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
