"""The Pareto front of a search: the trials no other trial beats on score and on cost.

A trial A dominates a trial B when A is at least as good on every objective and better on
at least one. The front is the set of trials no trial dominates; it is what a user picks
from to fit a budget ("the most accurate network under 33 ms"). Scores are maximised and
costs (latency, multiply-adds, parameters) minimised.

    front = pareto_front(load_run("runs/search").completed(False), cost="latency_ms")
"""

#: Costs the report and `tfnas results --pareto` know, with their axis labels.
COSTS = {"latency_ms": "latency (ms)", "madds": "multiply-adds", "params": "parameters"}


def non_dominated(points, directions):
    """Indices of the points no other point dominates.

    Args:
        points: sequence of equal-length tuples of floats.
        directions: sequence of `"max"` or `"min"`, one per coordinate.

    Returns:
        list of int, the indices of the front, in the order of `points`. Points equal on
        every coordinate do not dominate each other: all of them stay.

    Raises:
        ValueError: for a direction other than "max"/"min" or a point of the wrong length.
    """
    for d in directions:
        if d not in ("max", "min"):
            raise ValueError(f"direction {d!r} must be 'max' or 'min'")
    signs = [1.0 if d == "max" else -1.0 for d in directions]
    keyed = []
    for i, p in enumerate(points):
        if len(p) != len(signs):
            raise ValueError(
                f"point {i} {tuple(p)!r} has {len(p)} coordinates; expected "
                f"{len(signs)} (one per direction {list(directions)})"
            )
        keyed.append(tuple(s * float(v) for s, v in zip(signs, p)))
    front = []
    for i, a in enumerate(keyed):
        dominated = any(
            all(x >= y for x, y in zip(b, a)) and any(x > y for x, y in zip(b, a))
            for j, b in enumerate(keyed)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def pareto_front(trials, cost="latency_ms", score="reward", include_terminated=False):
    """The trials on the Pareto front of score (max) against one or more costs (min).

    Args:
        trials: iterable of `tfnas.report.Trial` (or dicts of metrics with `trial_id`).
        cost: str or sequence of str, metric name(s) to minimise: `"latency_ms"` (default),
            `"madds"`, `"params"` or any recorded metric.
        score: str, metric to maximise. Default `"reward"`.
        include_terminated: bool, whether trials stopped after stage 1 count (their reward is
            a stage-1 reward, not comparable with the others'). Default False.

    Returns:
        list of the front's trials, sorted by the first cost (cheapest first). Trials
        that lack the score or a cost (failed, running, latency not timed) are left out.
    """
    costs = [cost] if isinstance(cost, str) else list(cost)
    kept = []
    for t in trials:
        metrics = t if isinstance(t, dict) else t.metrics
        status = t.get("status", "COMPLETED") if isinstance(t, dict) else t.status
        if status != "COMPLETED" or (not include_terminated and metrics.get("terminated")):
            continue
        names = [score] + costs
        if all(metrics.get(n) is not None and metrics.get(n) == metrics.get(n) for n in names):
            kept.append((t, tuple(float(metrics[n]) for n in names)))
    front = non_dominated([p for _, p in kept], ["max"] + ["min"] * len(costs))
    chosen = [kept[i] for i in front]
    chosen.sort(key=lambda item: (item[1][1], -item[1][0]))
    return [t for t, _ in chosen]
