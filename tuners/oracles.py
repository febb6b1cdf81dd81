"""tfnas' Oracles by name, all maximising the proxy task's `reward`, and their resume bookkeeping."""

import datetime

import keras_tuner

#: The objective every NASTuner Oracle must have.
OBJECTIVE = keras_tuner.Objective("reward", "max")
#: Names `make_oracle` (and `tfnas search --oracle`) accepts.
ORACLES = ("ppo", "random", "reinforce", "gumbel")


def make_oracle(name, max_trials, seed=0, **kwargs):
    """One of tfnas' Oracles by name, with the `reward` (max) objective.

    Args:
        name: `"ppo"` (the CVPR 2019 paper's PPO controller), `"reinforce"` (the same
            controller trained with REINFORCE) or `"random"` (random search with near-best
            sampling, Chen et al. NeurIPS 2018) or `"gumbel"` (the architectures a one-shot
            search of the fabric derives, Hoang 2021; it needs `tfnas.tuners.oneshot.OneShotTuner`).
        max_trials: int >= 1.
        seed: int. Default 0.
        **kwargs: further Oracle arguments.

    Returns:
        A `keras_tuner.Oracle`.

    Raises:
        ValueError: for an unknown name or `max_trials < 1`.
    """
    if int(max_trials) < 1:
        raise ValueError(f"max_trials={max_trials!r} must be at least 1")
    if name in ("ppo", "reinforce"):
        from tfnas.tuners.ppo import PPOOracle

        return PPOOracle(objective=OBJECTIVE, max_trials=int(max_trials), seed=seed, algorithm=name, **kwargs)
    if name == "random":
        from tfnas.tuners.random_search import NearBestRandomOracle

        return NearBestRandomOracle(objective=OBJECTIVE, max_trials=int(max_trials), seed=seed, **kwargs)
    if name == "gumbel":
        from tfnas.tuners.oneshot import GumbelOracle

        return GumbelOracle(objective=OBJECTIVE, max_trials=int(max_trials), seed=seed, **kwargs)
    raise ValueError(f"unknown oracle {name!r}; expected one of {sorted(ORACLES)}")


def save_oracle_json(oracle):
    """Writes `oracle.get_state()` to the Oracle's `oracle.json` atomically.

    keras-tuner's `Oracle.save` writes the file in place, so a search killed during the
    write leaves a truncated `oracle.json` that `reload` cannot read; tfnas' Oracles call
    this from their `save` instead.

    Args:
        oracle: a `keras_tuner.Oracle` with its project directory set.
    """
    from tfnas.io import atomic_write_json

    atomic_write_json(oracle._get_oracle_fname(), oracle.get_state(), indent=None)


def drop_finished_retries(oracle):
    """Removes trials that ended since they were queued from keras-tuner's retry queue.

    A chief restarted with `--resume` re-queues the trials that were running when it died;
    a worker that kept running finishes such a trial and reports it. Without this, another
    worker would be handed the finished trial and run it a second time. tfnas' Oracles call
    it at the top of `create_trial`.

    Args:
        oracle: a `keras_tuner.Oracle`.
    """
    from keras_tuner.engine.trial import TrialStatus

    queue = getattr(oracle, "_retry_queue", None)
    if queue:
        queue[:] = [
            trial_id
            for trial_id in queue
            if oracle.trials[trial_id].status not in (TrialStatus.COMPLETED, TrialStatus.FAILED)
        ]


class ResumableOracle(keras_tuner.Oracle):
    """The base of tfnas' Oracles: keras-tuner's `Oracle` made safe to kill and resume.

    `save` writes `oracle.json` atomically (`save_oracle_json`) and `create_trial` never
    hands out a trial that ended since it was queued again (`drop_finished_retries`).
    Subclasses that save more call `super().save()` first.
    """

    def save(self):
        """Writes `oracle.json` atomically, so a search killed during the write resumes."""
        save_oracle_json(self)

    @keras_tuner.synchronized
    def create_trial(self, tuner_id):
        """keras-tuner's `create_trial`, never re-running a trial that ended (see `drop_finished_retries`)."""
        drop_finished_retries(self)
        return super().create_trial(tuner_id)


def finish_interrupted_trials(oracle):
    """Completes the bookkeeping of trials a kill cut short between their two saves.

    keras-tuner's `end_trial` writes the trial's `trial.json` (COMPLETED) and then the
    Oracle's `oracle.json`; a search killed in between reloads the trial as ended but the
    Oracle still lists it as running: `reload` queues it to run again and `end_order` (and a
    PPO controller's update) misses it. This ends such trials once more from their saved
    metrics, so the Oracle records them (and the controller learns from their reward)
    without running them again. `NASTuner.reload` calls it after keras-tuner's reload.

    Args:
        oracle: a reloaded `keras_tuner.Oracle`.
    """
    from keras_tuner.engine.trial import TrialStatus

    queue = getattr(oracle, "_retry_queue", None) or []
    interrupted = [
        trial_id
        for trial_id in queue
        if trial_id not in oracle.end_order
        and oracle.trials[trial_id].status in (TrialStatus.COMPLETED, TrialStatus.FAILED)
    ]
    requeue_unlisted_trials(oracle)
    drop_finished_retries(oracle)
    verbose, oracle.verbose = oracle.verbose, 0  # keras-tuner's display never saw them begin
    try:
        for trial_id in interrupted:
            oracle.end_trial(oracle.trials[trial_id])
    finally:
        oracle.verbose = verbose


def requeue_unlisted_trials(oracle):
    """Queues again a trial a kill cut short between the two saves of its creation.

    keras-tuner's `create_trial` writes the new trial's `trial.json` (RUNNING) and then
    `oracle.json`; a chief killed in between reloads the trial from its file, but its state
    lists it nowhere (not running, not queued, not ended): no worker would ever run it, and it
    counts towards `max_trials`, so the search ends with a trial that never ran. No worker got
    it either (the reply goes out after both saves), so it goes to the retry queue like the
    running trials of a stopped search, and the next worker to ask runs it. Called by
    `finish_interrupted_trials`.

    Args:
        oracle: a reloaded `keras_tuner.Oracle`.
    """
    from keras_tuner.engine.trial import TrialStatus

    queue = getattr(oracle, "_retry_queue", None)
    if queue is None:
        return
    listed = set(queue) | set(oracle.end_order) | {t.trial_id for t in oracle.ongoing_trials.values()}
    for trial_id, trial in sorted(oracle.trials.items()):
        if trial.status == TrialStatus.RUNNING and trial_id not in listed:
            queue.append(trial_id)
            if trial_id not in oracle.start_order:
                oracle.start_order.append(trial_id)


def return_running_trials(oracle):
    """On a restarted chief: trials that were running stay with the workers running them.

    keras-tuner's `reload` moves every trial its `oracle.json` lists as running into the
    retry queue, for a search that was stopped as a whole. When only the chief died, its
    workers are still running those trials: the next worker to ask would be handed a trial
    another worker is running, and it would run and be counted twice. This gives each such
    trial back to its worker (keras-tuner's `ongoing_trials`, by `KERASTUNER_TUNER_ID`): a
    worker that kept running reports it when it finishes, and a worker that died and is
    restarted with its id is handed it again (`create_trial` returns a tuner's ongoing
    trial). Call it after `finish_interrupted_trials`, on the chief only.

    Args:
        oracle: a reloaded `keras_tuner.Oracle`.
    """
    from keras_tuner.engine.trial import TrialStatus

    from tfnas.io import read_json

    running = read_json(oracle._get_oracle_fname(), "the Oracle's state").get("ongoing_trials", {})
    queue = getattr(oracle, "_retry_queue", None) or []
    display = oracle._display
    for tuner_id, trial_id in running.items():
        trial = oracle.trials.get(trial_id)
        if trial_id in queue and trial is not None and trial.status == TrialStatus.RUNNING:
            queue.remove(trial_id)
            oracle.ongoing_trials[tuner_id] = trial
            # keras-tuner saves `oracle.json` before its display notes a trial's start, so the
            # restored display may not know it, and its `on_trial_end` would raise KeyError.
            display.trial_start.setdefault(trial_id, datetime.datetime.now())
            display.trial_number.setdefault(trial_id, oracle.start_order.index(trial_id) + 1)
            if display.search_start is None:
                display.search_start = display.trial_start[trial_id]
