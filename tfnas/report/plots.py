"""The plots of a search report, as matplotlib Figures (no pyplot, no display needed).

- `rewards_figure`: the reward of every trial in search order with the best so far, and
  the stage-1 reward against the final one (Nekrasov et al. CVPR 2019, Fig. 2: a good
  stage-1 reward predicts a good final reward, which is what progressive termination
  relies on); trials terminated after stage 1 are marked.
- `pareto_figure`: score against latency, multiply-adds and parameters, the Pareto front
  (`tfnas.report.pareto`) drawn and highlighted.
- `controller_figure`: the PPO controller's entropy and baseline per update.
- `class_iou_figure`: the per-class IoU of one trial.

Every function returns the Figure; its axes hold the plotted data (`Line2D.get_xydata`,
`PathCollection.get_offsets`, bar heights), which the tests read back.
"""

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tfnas.report.pareto import COSTS, pareto_front
from tfnas.report.runs import class_ious

_DONE, _STOPPED, _BEST = "#1f77b4", "#d62728", "#2ca02c"


def _empty(ax, message):
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#777777")


def rewards_figure(trials):
    """Reward per trial with the best so far, and stage-1 vs final reward.

    Args:
        trials: list of `tfnas.report.Trial` in search order (`Run.trials`); those
            without a reward (running, failed) are left out.

    Returns:
        `Figure` with two axes. Left: the gids `"reward"` (completed trials),
        `"terminated"` (stopped after stage 1) scatters and the `"best so far"` line,
        x = the trial's position in the search (1-based). Right: stage-1 reward (x)
        against final reward (y) of the trials that reached stage 2.
    """
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1.6, 1])
    scored = [t for t in trials if t.completed and "reward" in t.metrics]
    done = [(t.order + 1, t.metrics["reward"]) for t in scored if not t.terminated]
    stopped = [(t.order + 1, t.metrics["reward"]) for t in scored if t.terminated]
    if done:
        left.scatter(*zip(*done), color=_DONE, label="reward", zorder=3, gid="reward")
    if stopped:
        left.scatter(
            *zip(*stopped),
            color=_STOPPED,
            marker="x",
            zorder=3,
            gid="terminated",
            label="terminated after stage 1 (stage-1 reward)",
        )
    best, line = float("-inf"), []
    for t in scored:
        best = max(best, t.metrics["reward"])
        line.append((t.order + 1, best))
    if line:
        left.step(*zip(*line), where="post", color=_BEST, label="best so far", gid="best so far")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.margins(0.08)
    left.set_xlabel("trial (search order)")
    left.set_ylabel("reward (meta-val)")
    left.set_title(f"reward of {len(scored)} scored trial(s)", fontsize=10)
    left.grid(alpha=0.3)
    if scored:
        left.legend(fontsize=8, loc="best")
    else:
        _empty(left, "no trial has a reward yet")

    pairs = [
        (t.metrics["stage1_reward"], t.metrics["reward"])
        for t in scored
        if not t.terminated and "stage1_reward" in t.metrics
    ]
    if pairs:
        right.scatter(*zip(*pairs), color=_DONE, gid="stage1 vs reward")
        low = min(min(p) for p in pairs)
        high = max(max(p) for p in pairs)
        right.plot([low, high], [low, high], color="#999999", lw=0.8, ls="--", label="y = x")
        right.legend(fontsize=8)
    else:
        _empty(right, "no trial has reached stage 2 yet\n(all stopped after stage 1 or running)")
    right.set_xlabel("stage-1 reward (decoder only)")
    right.set_ylabel("final reward (after stage 2)")
    right.set_title("stage 1 vs final (CVPR 2019 Fig. 2)", fontsize=10)
    right.grid(alpha=0.3)
    return fig


def pareto_figure(trials, score="reward", costs=tuple(COSTS), include_terminated=False):
    """Score against each cost, the Pareto front highlighted.

    Args:
        trials: list of `tfnas.report.Trial`.
        score: str, the metric to maximise. Default `"reward"`.
        costs: metric names to minimise, one panel each. Default latency, multiply-adds,
            parameters.
        include_terminated: bool, whether terminated trials count. Default False.

    Returns:
        `Figure`; each axes holds the scatters with gids `"trials"`, `"front"` and
        `"terminated"` (trials stopped after stage 1, drawn for context) and the
        front's line (gid `"front line"`). `figure.fronts` maps cost -> the front's trials.
    """
    fig = Figure(figsize=(4 * len(costs), 3.6), layout="constrained")
    axes = fig.subplots(1, len(costs), squeeze=False)[0]
    fig.fronts = {}
    for ax, cost in zip(axes, costs):
        points = [
            t
            for t in trials
            if t.completed
            and (include_terminated or not t.terminated)
            and score in t.metrics
            and cost in t.metrics
        ]
        front = pareto_front(points, cost=cost, score=score, include_terminated=include_terminated)
        fig.fronts[cost] = front
        if points:
            ax.scatter(
                [t.metrics[cost] for t in points],
                [t.metrics[score] for t in points],
                color="#bbbbbb",
                label="trials",
                gid="trials",
            )
        stopped = [
            t
            for t in trials
            if t.completed
            and t.terminated
            and not include_terminated
            and score in t.metrics
            and cost in t.metrics
        ]
        if stopped:  # shown for context, never on the front: their reward is a stage-1 reward
            ax.scatter(
                [t.metrics[cost] for t in stopped],
                [t.metrics[score] for t in stopped],
                color=_STOPPED,
                marker="x",
                alpha=0.5,
                label="terminated (not on the front)",
                gid="terminated",
            )
        if front:
            xs, ys = [t.metrics[cost] for t in front], [t.metrics[score] for t in front]
            ax.step(xs, ys, where="post", color=_BEST, gid="front line")
            ax.scatter(xs, ys, color=_BEST, edgecolor="black", zorder=3, label="Pareto front", gid="front")
            for t in front:
                ax.annotate(
                    t.trial_id,
                    (t.metrics[cost], t.metrics[score]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        if points or stopped:
            ax.legend(fontsize=8, loc="best")
        if not front:
            _empty(ax, f"no trial has completed both stages\nwith {cost} recorded yet")
        if cost in ("madds", "params"):
            ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
        ax.margins(0.1)  # markers at the extremes stay whole
        ax.set_xlabel(COSTS.get(cost, cost))
        ax.set_ylabel(score)
        ax.grid(alpha=0.3)
    return fig


def controller_figure(history):
    """The PPO controller's entropy and baseline per update.

    Args:
        history: list of dicts with `update`, `entropy`, `baseline` (see
            `Run.controller_history`).

    Returns:
        `Figure` with two axes holding the lines with gids `"entropy"` and `"baseline"`.
    """
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    for ax, key in zip(fig.subplots(1, 2), ("entropy", "baseline")):
        points = [(h.get("update", i + 1), h[key]) for i, h in enumerate(history) if h.get(key) is not None]
        if points:
            ax.plot(*zip(*points), marker="o", gid=key)
        ax.set_xlabel("controller update")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # updates are counted
        ax.ticklabel_format(axis="y", useOffset=False)  # an entropy of 35.09 reads as 35.09, not +3.509e1
        ax.set_ylabel(key)
        ax.set_title(
            {
                "entropy": "policy entropy (nats, summed over decisions)",
                "baseline": "reward baseline (moving average)",
            }[key],
            fontsize=10,
        )
        ax.grid(alpha=0.3)
    return fig


def class_iou_figure(trial, class_names=None):
    """Bar chart of a trial's per-class IoU (`iou_class_<k>` metrics).

    Args:
        trial: `tfnas.report.Trial` whose metrics hold `iou_class_<k>`.
        class_names: optional list of str, indexed by class.

    Returns:
        `Figure` whose axes hold one bar per recorded class, or None if none is recorded.
    """
    ious = class_ious(trial)
    if not ious:
        return None
    fig = Figure(figsize=(max(4, 0.5 * len(ious) + 1.5), 3.2), layout="constrained")
    ax = fig.subplots()
    names = [class_names[k] if class_names and k < len(class_names) else str(k) for k in ious]
    ax.bar(names, list(ious.values()), color=_DONE, gid="iou")
    ax.set_ylim(0, 1)
    ax.set_xlabel("class")
    ax.set_ylabel("IoU (meta-val)")
    ax.set_title(f"per-class IoU of trial {trial.trial_id}", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    return fig
