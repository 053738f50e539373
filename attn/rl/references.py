"""Reference solutions the evaluator compares a policy with (host NumPy/SciPy, batched).

Knapsack: the exact optimum (a 0/1 integer program solved by ``scipy.optimize.milp``).
TSP: nearest-neighbour tours improved by 2-opt until no exchange shortens them (within about
3% of the optimum on uniform 20-city instances).
"""

from __future__ import annotations

import numpy as np

__all__ = ["knapsack_optimum", "tour_lengths", "tsp_two_opt"]


def knapsack_optimum(weights: np.ndarray, values: np.ndarray, budgets: np.ndarray) -> np.ndarray:
    """Best total value of each instance: ``weights, values [B, E]``, ``budgets [B]`` -> ``[B]``."""
    from scipy import optimize  # only evaluations need it

    best = np.empty(len(weights))
    for index, (w, v, budget) in enumerate(zip(weights, values, budgets, strict=True)):
        result = optimize.milp(
            -np.asarray(v, np.float64),
            constraints=optimize.LinearConstraint(np.asarray(w, np.float64)[None], 0.0, budget),
            integrality=np.ones(len(w)),
            bounds=optimize.Bounds(0, 1),
        )
        if not result.success:
            raise RuntimeError(f"knapsack instance {index}: milp failed ({result.message})")
        best[index] = -result.fun
    return best


def tour_lengths(coordinates: np.ndarray, tours: np.ndarray) -> np.ndarray:
    """Closed tour lengths: ``coordinates [B, E, 2]``, ``tours [B, E]`` (city order) -> ``[B]``."""
    ordered = np.take_along_axis(coordinates, tours[..., None], axis=1)
    steps = ordered - np.roll(ordered, -1, axis=1)
    return np.linalg.norm(steps, axis=-1).sum(axis=1)


def _nearest_neighbour(points: np.ndarray) -> np.ndarray:
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    tour, free = [0], np.ones(len(points), bool)
    free[0] = False
    for _ in range(len(points) - 1):
        candidates = np.where(free, distances[tour[-1]], np.inf)
        tour.append(int(np.argmin(candidates)))
        free[tour[-1]] = False
    return np.asarray(tour)


def _two_opt(points: np.ndarray, tour: np.ndarray) -> np.ndarray:
    """Reverse the segment of the best improving exchange until none improves."""
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    n = len(tour)
    i, j = np.triu_indices(n, k=2)
    keep = ~((i == 0) & (j == n - 1))  # those two edges share a city
    i, j = i[keep], j[keep]
    while True:
        a, b = tour[i], tour[i + 1]
        c, d = tour[j], tour[(j + 1) % n]
        delta = distances[a, c] + distances[b, d] - distances[a, b] - distances[c, d]
        best = int(np.argmin(delta))
        if delta[best] >= -1e-9:
            return tour
        tour = np.concatenate(
            [tour[: i[best] + 1], tour[i[best] + 1 : j[best] + 1][::-1], tour[j[best] + 1 :]]
        )


def tsp_two_opt(coordinates: np.ndarray) -> np.ndarray:
    """Nearest neighbour + 2-opt tour length of each instance: ``[B, E, 2]`` -> ``[B]``."""
    coordinates = np.asarray(coordinates, np.float64)
    tours = np.stack([_two_opt(p, _nearest_neighbour(p)) for p in coordinates])
    return tour_lengths(coordinates, tours)
