"""`tfnas report`: one HTML page with PNG plots that tells what a search found.

The page (`index.html` beside its PNG files, readable offline, no script or network) shows
the run's settings, data, encoder and teacher (`run.json`); the reward of every trial with
the best so far and stage 1 vs final reward; the Pareto fronts of score against latency,
multiply-adds and parameters; the best architectures drawn as graphs; the per-class IoU
of the best trial; the PPO controller's entropy and baseline; and the table of trials. It
reads the search directory as it is, so it works while a search runs and after a kill.

    path = write_report("runs/search")          # runs/search/report/index.html
"""

import datetime
import html
import os

from tfnas.io import atomic_path
from tfnas.report import plots
from tfnas.report.graphs import GRAPHS, draw_genotype
from tfnas.report.pareto import COSTS
from tfnas.report.runs import class_ious, load_run, task_name
from tfnas.report.table import TEXT_COLUMNS, format_cell, format_value, trial_rows
from tfnas.tasks import TASKS

_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1150px;
color:#222;padding:0 1em}h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;
padding-bottom:.2em;margin-top:1.8em}table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.25em .55em;text-align:left;vertical-align:top}th{background:#f4f4f4}
img{max-width:100%;height:auto;border:1px solid #eee}code{font-size:.85em;word-break:break-all}
.note{color:#8a5a00;background:#fff7e6;padding:.5em .8em;border-left:3px solid #f0b030}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:0 2em}
"""


def _e(value):
    return html.escape(str(value))


def _table(rows, header=None):
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _kv(pairs):
    return _table([[_e(k), _e(v)] for k, v in pairs if v is not None])


def _save(fig, out_dir, name, images):
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=100)
    images.append(name)
    return f'<img src="{_e(name)}" alt="{_e(name)}">'


def _settings(run):
    """The run's settings split into (search, data, encoder and teacher) key-value lists."""
    r = run.run
    cli, config, settings = r.get("cli", {}), r.get("space_config", {}), r.get("settings", {})
    task = task_name(config)
    search = [
        ("task", task),
        ("space", r.get("space")),
        ("oracle", r.get("oracle")),
        ("trials asked", run.max_trials),
        ("objective", f"reward (max): {r.get('reward_description') or TASKS[task].reward_description}"),
        ("decoder width", config.get("width")),
    ]
    search += [(k, v) for k, v in settings.items() if k not in ("warmup_epochs", "warmup_learning_rate")]
    if cli.get("images"):
        targets = cli.get("masks") or cli.get("depths") or cli.get("keypoints")
        source = f"folder {cli['images']} with {targets}"
    elif cli.get("tfds"):
        source = f"TFDS {cli['tfds']} ({cli.get('tfds_split')})"
    elif cli and task == "segmentation":
        source = f"built-in digit scenes: {cli.get('scenes')} scenes, digits {cli.get('digits') or '0-9'}"
    elif cli:
        source = f"built-in {task} data: {cli.get('scenes')} images"
    else:
        source = "given to NASTuner.search from Python"
    data = [
        ("source", source),
        ("image size", r.get("image_size")),
        ("classes", r.get("num_classes")),
        ("meta-train images", r.get("meta_train_images")),
        ("meta-val images", r.get("meta_val_images")),
        ("encoder outputs cached", r.get("cached_images")),
    ]
    teacher = cli.get("teacher", "auto")
    if r.get("distillation"):
        teacher = f"{teacher}: distillation on ({'the warmed-up model' if teacher == 'auto' else teacher})"
    elif "distillation" in r:
        teacher = "none (no distillation)"
    encoder = [
        ("encoder", config.get("encoder")),
        ("width multiplier (alpha)", config.get("alpha")),
        ("output stride", config.get("output_stride")),
        ("weights", config.get("encoder_weights") or "none (warmed up on the search data)"),
        ("warm-up epochs", settings.get("warmup_epochs")),
        ("warm-up learning rate", settings.get("warmup_learning_rate")),
        ("teacher", teacher),
        ("tfnas version", r.get("tfnas_version")),
    ]
    return search, data, encoder


def write_report(run_dir, out=None, top=3):
    """Writes the report of a search directory.

    Args:
        run_dir: str, the search directory.
        out: str or None, the folder of the page and its images; default `RUN_DIR/report`.
        top: int, how many of the best architectures to draw. Default 3.

    Returns:
        str, the path of `index.html`. The page references only PNG files in `out`.

    Raises:
        FileNotFoundError: if `run_dir` holds no search.
    """
    run = load_run(run_dir)
    out = out or os.path.join(run_dir, "report")
    os.makedirs(out, exist_ok=True)
    for stale in os.listdir(out):  # drawings of trials that are no longer among the best
        if stale.startswith("arch_") and stale.endswith(".png"):
            os.remove(os.path.join(out, stale))
    images, body = [], []
    name = os.path.basename(os.path.abspath(run_dir))
    counts = {}
    for t in run.trials:
        key = "terminated" if t.completed and t.terminated else t.status.lower()
        counts[key] = counts.get(key, 0) + 1
    status = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no trial yet"
    running = run.oracle.get("ongoing_trials") or any(t.status == "RUNNING" for t in run.trials)
    body.append(f"<h1>tfnas search <code>{_e(name)}</code></h1>")
    body.append(
        f"<p>{_e(run.run.get('space', '?'))} space, {_e(run.run.get('oracle', '?'))}: "
        f"{len(run.trials)} of {_e(run.max_trials or '?')} trial(s) ({_e(status)})"
        f"{'; the search is running or was stopped' if running else ''}. "
        f"Directory <code>{_e(os.path.abspath(run_dir))}</code>; written "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.</p>"
    )
    for why in run.skipped:
        body.append(f'<p class="note">left out: {_e(why)}</p>')

    best = run.best(max(1, top))
    if best:
        b = best[0]
        body.append(
            f"<p>Best: trial <b>{_e(b.trial_id)}</b>, reward <b>{b.score:.4f}</b>, "
            f"{format_value('params', b.metrics.get('params'))} parameters, "
            f"{format_value('madds', b.metrics.get('madds'))} multiply-adds, "
            f"{format_value('latency_ms', b.metrics.get('latency_ms'))} ms. "
            f"Export it with <code>tfnas export {_e(run_dir)}</code>.</p>"
        )

    body.append("<h2>Rewards</h2>")
    body.append(
        "<p>Each trial's meta-val reward in search order, with the best so far; red crosses "
        "are trials that progressive termination stopped after stage 1 (their reward is the "
        "stage-1 reward). Right: the stage-1 reward against the final reward of the others.</p>"
    )
    body.append(_save(plots.rewards_figure(run.trials), out, "rewards.png", images))

    body.append("<h2>Pareto front</h2>")
    body.append(
        "<p>Reward against cost of the trials that completed both stages; the green points "
        "are the Pareto front: no other trial is both better and cheaper. Latency is measured "
        "on the search machine at the search's image size, batch 1.</p>"
    )
    figure = plots.pareto_figure(run.trials)
    body.append(_save(figure, out, "pareto.png", images))
    front = figure.fronts.get("latency_ms") or []
    if front:
        body.append("<p>Front against latency (<code>tfnas results RUN_DIR --pareto</code>):</p>")
        body.append(
            _table(
                [
                    [_e(t.trial_id), f"{t.score:.4f}"]
                    + [_e(format_value(c, t.metrics.get(c))) for c in COSTS]
                    + [f"<code>{_e(t.arch)}</code>"]
                    for t in front
                ],
                ["trial", "reward"] + list(COSTS.values()) + ["genotype"],
            )
        )

    body.append("<h2>Best architectures</h2>")
    space_name = run.run.get("space")
    scores = [name for name, _ in TASKS[task_name(run.run.get("space_config"))].headline_scores]
    if not best:
        body.append('<p class="note">No trial has completed yet.</p>')
    for rank, t in enumerate(best, start=1):
        metrics = ", ".join(
            f"{k} {format_value(k, t.metrics.get(k))}"
            for k in ("reward", "stage1_reward", *scores, "params", "madds", "latency_ms")
            if k in t.metrics
        )
        body.append(
            f"<h3>{rank}. trial {_e(t.trial_id)}{' (terminated after stage 1)' if t.terminated else ''}</h3>"
            f"<p>{_e(metrics)}<br>genotype <code>{_e(t.arch)}</code></p>"
        )
        if space_name in GRAPHS and t.genotype is not None:
            fig = draw_genotype(space_name, t.genotype)
            body.append(_save(fig, out, f"arch_{rank}_trial_{t.trial_id}.png", images))
        else:
            body.append(f'<p class="note">No drawing for space {_e(space_name)}: its values are shown.</p>')

    if task_name(run.run.get("space_config")) == "segmentation":  # a segmentation score
        body.append("<h2>Per-class IoU of the best</h2>")
        if best and class_ious(best[0]):
            body.append(_save(plots.class_iou_figure(best[0]), out, "class_iou.png", images))
        else:
            body.append(
                '<p class="note">Not recorded: the trials\' metrics hold no <code>iou_class_&lt;k&gt;</code>. '
                "NASTuner.run_trial must add <code>iou_class_&lt;k&gt;</code> = "
                "<code>scores['per_class_iou'][k]</code> for every class k to the metrics it returns.</p>"
            )

    if run.run.get("oracle") in ("PPOOracle",) or "controller" in run.oracle:
        body.append("<h2>Controller</h2>")
        history = run.controller_history()
        if history:
            body.append(_save(plots.controller_figure(history), out, "controller.png", images))
        else:
            controller = run.oracle.get("controller", {})
            body.append(
                f'<p class="note">The controller\'s history is not recorded (updates so far: '
                f"{_e(controller.get('updates', '?'))}, current baseline: "
                f"{_e(format_value('reward', controller.get('baseline')))}). The Oracle must "
                'append <code>{"update", "baseline", "entropy"}</code> to '
                '<code>oracle.json["controller"]["history"]</code> at every update.</p>'
            )

    search, data, encoder = _settings(run)
    body.append(
        "<h2>Run</h2><div class='grid'><div><h3>Search</h3>" + _kv(search) + "</div>"
        "<div><h3>Data</h3>" + _kv(data) + "<h3>Encoder and teacher</h3>" + _kv(encoder) + "</div></div>"
    )

    body.append("<h2>All trials</h2>")
    rows, _ = trial_rows(run.trials, sort="order")
    columns = TEXT_COLUMNS
    body.append(
        _table(
            [
                [
                    _e(format_cell(c, r.get(c))) if c != "genotype" else f"<code>{_e(r[c])}</code>"
                    for c in columns
                ]
                for r in rows
            ],
            columns,
        )
    )

    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>tfnas report: {_e(name)}</title><style>{_STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    path = os.path.join(out, "index.html")
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(page)
    return path
