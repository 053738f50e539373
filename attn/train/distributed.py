"""Many processes, one run: starting ``jax.distributed`` and the checks its processes share.

``attn run`` calls :func:`initialize` before JAX touches a device. With ``--coordinator
HOST:PORT --num-processes N --process-id I`` (or ``ATTN_COORDINATOR``, ``ATTN_NUM_PROCESSES``,
``ATTN_PROCESS_ID``) it starts exactly that; with none of them it lets JAX detect a cluster
(Slurm, Open MPI, Cloud TPU, Kubernetes, or ``JAX_COORDINATOR_ADDRESS``) and otherwise stays
one process. Every process then runs the same program over the global devices: process 0
alone writes logs, plots and ``config.json``; all of them take part in orbax saves and restores.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

__all__ = [
    "ENVIRONMENT",
    "Cluster",
    "agree",
    "check_same_config",
    "cluster_from",
    "initialize",
    "is_primary",
]

# The environment variables that stand for the flags (a flag given wins).
ENVIRONMENT = {
    "coordinator": "ATTN_COORDINATOR",
    "num_processes": "ATTN_NUM_PROCESSES",
    "process_id": "ATTN_PROCESS_ID",
}


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where this process stands: the coordinator's ``HOST:PORT``, the process count and this
    process's index; all None to let JAX detect a cluster environment."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    @property
    def explicit(self) -> bool:
        return self.coordinator is not None


def cluster_from(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Cluster:
    """The flags, completed from :data:`ENVIRONMENT`, checked: all three or none, a
    ``HOST:PORT`` address, ``0 <= process_id < num_processes``. ValueError names the flag."""
    given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    for name, variable in ENVIRONMENT.items():
        if given[name] is None and environ.get(variable):
            given[name] = environ[variable]
    flags = {name: f"--{name.replace('_', '-')} ({ENVIRONMENT[name]})" for name in given}
    missing = [flags[name] for name, value in given.items() if value is None]
    if len(missing) == len(given):
        return Cluster()
    if missing:
        raise ValueError(
            f"{', '.join(missing)} missing: a multi-process run needs --coordinator HOST:PORT, "
            "--num-processes N and --process-id I together (or none, to detect a cluster)"
        )
    host, _, port = str(given["coordinator"]).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"{flags['coordinator']} must be HOST:PORT (e.g. 10.0.0.1:1234), "
            f"got {given['coordinator']!r}"
        )
    counts = {}
    for name in ("num_processes", "process_id"):
        try:
            counts[name] = int(given[name])
        except ValueError:
            raise ValueError(f"{flags[name]} must be an int, got {given[name]!r}") from None
    if counts["num_processes"] < 1:
        raise ValueError(f"{flags['num_processes']} must be >= 1, got {counts['num_processes']}")
    if not 0 <= counts["process_id"] < counts["num_processes"]:
        raise ValueError(
            f"{flags['process_id']} must be in [0, {counts['num_processes']}), "
            f"got {counts['process_id']}"
        )
    return Cluster(str(given["coordinator"]), counts["num_processes"], counts["process_id"])


def initialize(cluster: Cluster) -> None:
    """Start ``jax.distributed`` for ``cluster`` (before anything uses a device); without
    explicit settings only where JAX detects a cluster environment."""
    if cluster.explicit:
        if cluster.num_processes > 1:
            jax.distributed.initialize(
                cluster.coordinator, cluster.num_processes, cluster.process_id
            )
        return
    try:
        jax.distributed.initialize()
    except ValueError as error:
        # JAX's word for "no cluster environment detected and no address given": one process.
        if "coordinator_address" not in str(error):
            raise
    except RuntimeError as error:
        # JAX started before (`attn.cli.main` called from Python): it stays as it was set up.
        if "must be called before" not in str(error):
            raise


def is_primary() -> bool:
    """Whether this process writes the run's files (logs, plots, ``config.json``)."""
    return jax.process_index() == 0


def agree(ok: bool) -> bool:
    """Whether ``ok`` holds on every process (a collective: every process calls it)."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def check_same_config(config: ml_collections.ConfigDict) -> None:
    """ValueError on every process unless all processes run the same config (a collective)."""
    if jax.process_count() == 1:
        return
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    digest = np.frombuffer(hashlib.sha256(text.encode()).digest()[:16], np.int32)
    digests = multihost_utils.process_allgather(digest)  # [processes, 4]
    differ = [p for p in range(len(digests)) if not np.array_equal(digests[p], digests[0])]
    if differ:
        raise ValueError(
            f"the processes run different configs: process(es) {differ} differ from process 0 "
            f"(this is process {jax.process_index()}). Start every process with the same "
            "experiment file and --config overrides."
        )
