"""Re-ranking of a search's best architectures by longer training (Nekrasov et al., CVPR 2019, Sec. 4.2).

A search ranks architectures by a proxy reward earned in a few epochs; longer training
changes the order. The papers therefore train the best ones longer before choosing one:
CVPR 2019 (Sec. 4.2) retrains the 10 best for 20 epochs (BSD+VOC) and 30 more (VOC), and
the Dense Prediction Cell paper (Chen et al., NeurIPS 2018, Sec. 3.3 and 4.2) re-ranks its
top 50 by fine-tuning the entire model (its final top-1 was 12th on the proxy).

`rerank` takes the K best COMPLETED trials of a search by search reward (`RERANK` gives K per
space), trains each from its proxy-trained weights on the search's own data with its task's
full recipe stretched to the rerank's epochs (`tfnas.training.full.train`, per-epoch
checkpoints), and orders them by the reward of that longer training:

    RUN_DIR/rerank.json              the record: settings, and per architecture, as each
                                     finishes, its search and rerank rewards and scores
    RUN_DIR/rerank/run.json          the reranked architectures as a search directory of their
    RUN_DIR/rerank/trial_<id>/       own (trial.json with the rerank's scores, model.weights.h5,
                                     checkpoint/, tensorboard/): tfnas results and tfnas export
                                     read it as they read a search

A rerank killed at any moment resumes: architectures in `rerank.json` are not trained again,
and the one that was training continues from its last whole epoch. Run again after the search
went on (or with a larger `top`), the K best are chosen again and only the newcomers train.
`tfnas train RUN_DIR --trial reranked` then trains the winner with the full recipe.

    rows = rerank("runs/voc", top=10, epochs=50)   # the search's data, loaded again from run.json
    print(rerank_table(rows))
"""

import collections
import os
import sys
import time

from tfnas.io import atomic_write_json, read_json
from tfnas.report.progress import format_duration
from tfnas.search_dir import RUN_FILE, TRIAL_FILE, SearchDir

__all__ = [
    "RERANK",
    "RERANK_DIR",
    "RERANK_FILE",
    "rerank",
    "rerank_defaults",
    "rerank_table",
    "reranked_trial_id",
]

#: The record of a rerank, in the search directory.
RERANK_FILE = "rerank.json"
#: The folder of the reranked architectures' trainings (a search directory), in the search's.
RERANK_DIR = "rerank"
#: What `run.json` of `RERANK_DIR` keeps about the rerank.
RERANK_ENTRY = "rerank"
#: The papers' re-ranking per space: how many architectures, how many epochs, and where from.
RERANK = {
    "auxcell": {
        "top": 10,
        "epochs": 50,
        "source": "Nekrasov et al. (CVPR 2019), Sec. 4.2: the 10 best retrained for 20 epochs "
        "(BSD+VOC) and 30 (VOC)",
    },
    "template": {
        "top": 10,
        "epochs": 50,
        "source": "Nekrasov et al. (WACV 2020) describe no re-ranking; CVPR 2019's (Sec. 4.2): the "
        "10 best for 20 + 30 epochs",
    },
    "dpc": {
        "top": 50,
        "epochs": 50,
        "source": "Chen et al. (NeurIPS 2018), Sec. 3.3 and 4.2: the top 50 re-ranked by fine-tuning "
        "the entire model (no length given: CVPR 2019's 20 + 30 epochs)",
    },
}


def rerank_defaults(space):
    """The papers' re-ranking of a space: dict with `top`, `epochs` and `source`.

    Args:
        space: str, the space's name (`run.json` `space`); spaces without a paper's
            re-ranking take the auxcell space's (CVPR 2019).
    """
    return RERANK.get(space, RERANK["auxcell"])


def _search(run_dir):
    """The `SearchDir` of a search (not of a training or a rerank), or a clear error."""
    from tfnas.training.train_cli import FULL_TRAINING

    source = SearchDir(run_dir)
    if not os.path.isdir(source.path):
        raise FileNotFoundError(
            f"{run_dir!r} is not a folder; give the search directory of tfnas search --out"
        )
    if not source.has_run():
        raise FileNotFoundError(
            f"{run_dir!r} holds no search (no {RUN_FILE}); give the folder of tfnas search --out"
        )
    run = source.read_run()
    for entry, what in ((FULL_TRAINING, "a full training (tfnas train)"), (RERANK_ENTRY, "a rerank")):
        if entry in run:
            raise ValueError(
                f"{run_dir!r} holds {what} of {run[entry].get('source')!r}, not a search; rerank "
                "the search directory itself"
            )
    return source


def _candidates(source, top, include_terminated):
    """The `top` best COMPLETED trials by search reward (`tfnas.report.Trial`s, best first),
    and a note for each kind of trial left out."""
    from tfnas.report.runs import load_run
    from tfnas.retention import pruned_message

    run = load_run(source.path)
    notes = [f"left out {why}" for why in run.skipped]
    other = collections.Counter(t.status for t in run.trials if not t.completed and t.status != "FAILED")
    failed = sum(t.status == "FAILED" for t in run.trials)
    if failed:
        notes.append(f"{failed} FAILED trial(s) left out: they have no reward")
    if other:
        states = ", ".join(f"{n} {status}" for status, n in sorted(other.items()))
        notes.append(f"trials without a reward left out ({states}): still running, or cut short")
    eligible = []
    terminated = 0
    for trial in sorted((t for t in run.trials if t.completed), key=lambda t: -t.score):
        if trial.terminated and not include_terminated:
            terminated += 1
        elif not os.path.exists(source.trial_weights(trial.trial_id)):
            why = pruned_message(source.path, trial.trial_id)
            notes.append(f"trial {trial.trial_id} left out: {why or 'its trained weights are missing'}")
        else:
            eligible.append(trial)
    if terminated:
        notes.append(
            f"{terminated} trial(s) stopped by progressive termination left out: their reward is "
            "stage 1's, not comparable (include_terminated=True, --include-terminated, reranks them)"
        )
    if len(eligible) < top:
        notes.append(
            f"only {len(eligible)} completed architecture(s) to rerank, fewer than top={top}: "
            "reranking all of them"
        )
    return eligible[:top], notes


def _previous(path, top, epochs, batch_size):
    """The record of an earlier rerank of the search (None), checked against these settings."""
    if not os.path.exists(path):
        return None
    record = read_json(path, "the record of tfnas rerank")
    saved = record.get("settings", {})
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value is not None and int(value) != saved.get(name):
            raise ValueError(
                f"{path} holds a rerank with {name}={saved.get(name)}, not {value}; rerank with "
                f"the settings it started with (leave {name} out), or delete {path} and the "
                f"{RERANK_DIR}/ folder beside it to start again"
            )
    return record


def _training_seconds(directory):
    from tfnas.training.checkpoints import Checkpoint

    state = Checkpoint(directory).read()
    return float(sum(h.get("seconds", 0.0) for h in state["history"])) if state else 0.0


def _reward_text(result):
    reward = result.get("rerank_reward")
    return "FAILED (the loss stopped being finite)" if reward is None else f"reward {reward:.4f}"


def _rows(candidates, results, task):
    """The reranked architectures, best rerank reward first (failed ones last)."""
    search_rank = {t.trial_id: i + 1 for i, t in enumerate(candidates)}
    done = [t for t in candidates if t.trial_id in results]
    key = lambda t: results[t.trial_id].get("rerank_reward")
    done.sort(key=lambda t: (key(t) is None, -(key(t) or 0.0), search_rank[t.trial_id]))
    headline = [k for k, _ in task.headline_scores[:1] if k != "reward"]
    rows = []
    for rank, trial in enumerate(done, 1):
        result = results[trial.trial_id]
        rows.append(
            {
                "rank": rank,
                "trial_id": trial.trial_id,
                "rerank_reward": result.get("rerank_reward"),
                "search_reward": result["search_reward"],
                "search_rank": search_rank[trial.trial_id],
                "change": search_rank[trial.trial_id] - rank,
                **{k: result.get("scores", {}).get(k) for k in headline},
                "status": result["status"],
                "genotype": trial.arch,
            }
        )
    return rows


def rerank(
    run_dir,
    top=None,
    epochs=None,
    batch_size=None,
    train=None,
    val=None,
    include_terminated=False,
    verbose=1,
    stream=None,
):
    """Trains the best architectures of a search longer and orders them by the result.

    See the module docstring. Each architecture starts from its proxy-trained weights and
    trains with its task's full recipe (`tfnas.training.recipes`) stretched to `epochs`,
    seeded by the search's seed; it is scored on the search's meta-val data.

    Args:
        run_dir: str, the search directory (`tfnas search --out`).
        top: int >= 1, how many of the best COMPLETED trials to rerank. None: the earlier
            rerank's, else the space's (`RERANK`: 10 for auxcell and template, 50 for DPC).
        epochs: int >= 1, epochs of each architecture. None: the earlier rerank's, else the
            space's (50: CVPR 2019's 20 + 30).
        batch_size: int >= 1. None: the earlier rerank's, else the recipe's.
        train, val: the data (as `tfnas.training.full.train` takes them). None: the search's,
            loaded again from the `tfnas search` arguments in `run.json`, split as it split them.
        include_terminated: bool, also rerank trials that progressive termination stopped
            after stage 1 (their reward is stage 1's). Default False.
        verbose: 0 silent, 1 a line per architecture and the notes, 2 also a line per epoch.
        stream: file for the lines. Default `sys.stdout`.

    Returns:
        list of dict, the reranked architectures best first: `rank`, `trial_id`,
        `rerank_reward`, `search_reward`, `search_rank`, `change` (positions gained over the
        search's order), the task's headline score, `status` (`COMPLETED`, or `FAILED` when the
        loss stopped being finite) and `genotype`.

    Raises:
        FileNotFoundError: if `run_dir` is not a search directory.
        ValueError: for bad settings, settings other than those of the rerank being resumed,
            or a search run from Python without `train` and `val`.
        tfnas.cli.UsageError: when the search's data cannot be loaded again.
    """
    import keras

    from tfnas.training.full import train as train_model
    from tfnas.training.recipes import TrainSettings, recipe
    from tfnas.training.train_cli import _trial_state, search_data

    stream = stream or sys.stdout
    say = (lambda line: print(line, file=stream, flush=True)) if verbose else (lambda line: None)
    if top is not None and (isinstance(top, bool) or int(top) != top or top < 1):
        raise ValueError(f"top={top!r} must be an integer >= 1 (the number of architectures to rerank)")
    source = _search(run_dir)
    run = source.read_run()
    defaults = rerank_defaults(run.get("space"))
    record_path = source.file(RERANK_FILE)
    record = _previous(record_path, top, epochs, batch_size) or {}
    saved = record.get("settings", {})
    top = int(top or record.get("top") or defaults["top"])
    cli = run.get("cli") or {}
    settings = TrainSettings(
        epochs=epochs or saved.get("epochs") or defaults["epochs"],
        batch_size=batch_size or saved.get("batch_size"),
        seed=int(cli.get("seed") or 0),
    )
    task = source.space(encoder_weights=None).task
    resolved = settings.resolve(task)
    candidates, notes = _candidates(source, top, include_terminated)
    for note in notes:
        say(f"note: {note}")
    if not candidates:
        raise ValueError(
            f"{run_dir!r} has no completed architecture to rerank; wait for the search to "
            "complete a trial" + ("" if include_terminated else " (or include the terminated ones)")
        )
    results = record.get("results", {})
    record = {
        "top": top,
        "trials": [t.trial_id for t in candidates],
        "settings": resolved.to_json(),
        "recipe": recipe(task)["source"],
        "paper": defaults["source"],
        "start": "each trial's proxy-trained weights",
        "results": results,
    }
    atomic_write_json(record_path, record)
    out = SearchDir(source.file(RERANK_DIR))
    os.makedirs(out.path, exist_ok=True)
    out.update_run(
        {
            **run,
            "max_trials": len(candidates),
            RERANK_ENTRY: {
                "source": os.path.abspath(source.path),
                **{k: record[k] for k in ("top", "settings")},
            },
        }
    )
    say(
        f"tfnas: reranking the {len(candidates)} best of {source.path} for {resolved.epochs} epoch(s) "
        f"each, batch {resolved.batch_size}, from their proxy-trained weights ({defaults['source']})"
    )
    seconds, total = [], len(candidates)
    for i, trial in enumerate(candidates, 1):
        tid = trial.trial_id
        head = f"rerank {i}/{total}  trial {tid}"
        if tid in results:
            say(f"{head}  reranked before: {_reward_text(results[tid])} (search {trial.score:.4f})")
            continue
        if train is None:  # loaded once, only when something is to train
            if not run.get("cli"):
                raise ValueError(
                    f"{run_dir!r} was searched from Python ({RUN_FILE} keeps no tfnas search "
                    "arguments), so its data cannot be loaded again; pass train= and val="
                )
            train, val = search_data(run["cli"])
        directory = out.trial_dir(tid)
        os.makedirs(directory, exist_ok=True)
        atomic_write_json(os.path.join(directory, TRIAL_FILE), _trial_state(source, tid, "RUNNING"))
        began = time.perf_counter()
        keras.backend.clear_session()
        with settings.scope():
            model, _ = source.load_trial_model(tid)
        try:
            scores = train_model(
                model, task, train, val, directory, settings, resume=True, verbose=int(verbose >= 2)
            )
            result = {"status": "COMPLETED", "rerank_reward": scores["reward"], "scores": scores}
        except FloatingPointError as err:  # the architecture diverged: it ranks last
            scores, result = None, {"status": "FAILED", "rerank_reward": None, "message": str(err)}
        seconds.append(time.perf_counter() - began)
        result.update(search_reward=trial.score, seconds=_training_seconds(directory))
        state = _trial_state(source, tid, result["status"], scores)
        atomic_write_json(os.path.join(directory, TRIAL_FILE), state)
        results[tid] = result
        atomic_write_json(record_path, record)
        left = sum(t.trial_id not in results for t in candidates[i:]) * (sum(seconds) / len(seconds))
        say(
            f"{head}  {_reward_text(result)} (search {trial.score:.4f})  {format_duration(seconds[-1])}"
            + (f"  ~{format_duration(left)} left" if left else "")
        )
    return _rows(candidates, results, task)


def rerank_table(rows):
    """The text table of `rerank`'s rows: rank, rewards, rank change, genotype."""
    from tfnas.report.table import text_table

    shown = [{**row, "change": f"{row['change']:+d}" if row["change"] else "0"} for row in rows]
    columns = [
        c for c in (rows[0] if rows else {}) if c != "status" or any(r["status"] != "COMPLETED" for r in rows)
    ]
    return text_table(shown, columns or ["rank", "trial_id", "rerank_reward", "search_reward", "genotype"])


def reranked_trial_id(run_dir):
    """The id of the trial with the best rerank reward (`tfnas train --trial reranked`).

    Raises:
        ValueError: if the search was not reranked, or its rerank is not finished.
    """
    path = SearchDir(run_dir).file(RERANK_FILE)
    if not os.path.exists(path):
        raise ValueError(
            f"{run_dir!r} was not reranked (no {RERANK_FILE}); run tfnas rerank {run_dir} first, or "
            "pass --trial best"
        )
    record = read_json(path, "the record of tfnas rerank")
    results = record.get("results", {})
    missing = [t for t in record.get("trials", []) if t not in results]
    if missing:
        raise ValueError(
            f"the rerank of {run_dir!r} is not finished ({len(results)} of {len(record['trials'])} "
            f"architectures); finish it with tfnas rerank {run_dir}"
        )
    scored = {
        t: results[t]["rerank_reward"]
        for t in record["trials"]
        if results[t].get("rerank_reward") is not None
    }
    if not scored:
        raise ValueError(f"every architecture of the rerank of {run_dir!r} failed; pass --trial best")
    return max(scored, key=scored.get)
