"""What a user sees of a search: the table of trials, the Pareto front, the HTML report,
the one-line progress per trial and TensorBoard's HParams view.

    from tfnas.report import load_run, pareto_front, write_report
    run = load_run("runs/search")
    front = pareto_front(run.trials, cost="latency_ms")   # reward (max) vs latency (min)
    write_report("runs/search")                           # runs/search/report/index.html
"""

from tfnas.report.pareto import non_dominated, pareto_front
from tfnas.report.runs import Run, Trial, class_ious, load_run

__all__ = [
    "Run",
    "Trial",
    "class_ious",
    "load_run",
    "non_dominated",
    "pareto_front",
    "write_report",
    "ProgressPrinter",
    "HParamsWriter",
]


def __getattr__(name):
    # matplotlib and TensorFlow load only when the report or the writer is used.
    if name == "write_report":
        from tfnas.report.html import write_report

        return write_report
    if name == "ProgressPrinter":
        from tfnas.report.progress import ProgressPrinter

        return ProgressPrinter
    if name == "HParamsWriter":
        from tfnas.report.tensorboard import HParamsWriter

        return HParamsWriter
    raise AttributeError(f"module 'tfnas.report' has no attribute {name!r}")
