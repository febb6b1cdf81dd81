"""The table of trials of a search (`tfnas results`): rows, sorting, text, CSV and JSON."""

import csv
import io
import json

from tfnas.report.runs import METRICS

#: The first columns of every table, in order.
COLUMNS = (
    "trial_id",
    "status",
    "reward",
    "stage1_reward",
    "params",
    "madds",
    "latency_ms",
    "terminated",
    "trial_seconds",
    "genotype",
)
#: Columns of the text table and the report (the genotype last: it is the widest); JSON and
#: CSV hold every recorded metric.
TEXT_COLUMNS = COLUMNS
#: Sorting directions: these are better when larger; every other metric when smaller.
_LARGER_IS_BETTER = {
    "reward",
    "stage1_reward",
    "score",
    *("miou", "fwiou", "mean_accuracy", "pixel_accuracy"),  # segmentation
    *("delta1", "delta2", "delta3"),  # depth (its errors are better smaller)
    *("pckh", "pckh@0.5", "pckh@0.1"),  # pose
    *("ap", "ap50", "ap75", "ap_medium", "ap_large", "ar", "ar50", "ar75", "ar_medium", "ar_large"),
}


def format_value(name, value):
    """A metric as the table shows it: 4 decimals for scores, K/M/G for counts, `-` for none."""
    if value is None or value != value:
        return "-"
    if name in ("params", "madds", "training_params"):
        for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
            if abs(value) >= scale:
                return f"{value / scale:.2f}{unit}"
        return f"{value:.0f}"
    if name == "terminated":
        return "yes" if value else "no"
    if name.endswith("_ms") or name.endswith("_seconds"):
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def trial_rows(trials, sort="reward", descending=None):
    """The rows of the trials table, sorted.

    Args:
        trials: list of `tfnas.report.Trial`.
        sort: str, the column to sort by: `"order"` (search order), `"trial_id"`, or any
            metric (`reward`, `latency_ms`, ...). Default `"reward"`.
        descending: bool or None; None sorts scores largest first and costs smallest first.

    Returns:
        (list of dict rows, list of column names): the columns are `COLUMNS` followed by the
        other metrics any trial recorded; trials missing the sort key come last.

    Raises:
        ValueError: if `sort` is neither a column nor a recorded metric.
    """
    rows = [t.row() for t in trials]
    extra = sorted({k for r in rows for k in r} - set(COLUMNS) - {"order", "score", "message"})
    columns = list(COLUMNS) + [k for k in METRICS if k in extra] + [k for k in extra if k not in METRICS]
    known = set(columns) | {"order", "score"}
    if sort not in known:
        raise ValueError(f"cannot sort by {sort!r}; expected one of {sorted(known)}")
    if descending is None:
        descending = sort in _LARGER_IS_BETTER
    if sort == "trial_id":
        key = lambda r: (
            (int(r["trial_id"]), "") if str(r["trial_id"]).isdigit() else (float("inf"), r["trial_id"])
        )
        return sorted(rows, key=key, reverse=bool(descending)), columns
    present = [r for r in rows if r.get(sort) is not None]
    missing = [r for r in rows if r.get(sort) is None]
    present.sort(key=lambda r: r[sort], reverse=bool(descending))
    return present + missing, columns


def format_cell(column, value):
    """A table cell: ids, status and genotype as they are, metrics by `format_value`."""
    if column in ("trial_id", "status", "genotype"):
        return "" if value is None else str(value)
    return format_value(column, value)


def text_table(rows, columns=None):
    """A fixed-width text table of `rows` (dicts) over `columns` (default `TEXT_COLUMNS`)."""
    columns = list(columns or TEXT_COLUMNS)
    cells = [[format_cell(c, r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])


def csv_table(rows, columns):
    """`rows` as CSV text (full precision, empty cells for missing values)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: "" if r.get(c) is None else r.get(c) for c in columns})
    return buffer.getvalue()


def json_table(rows):
    """`rows` as JSON text: a list of objects with every field of each trial."""
    return json.dumps(rows, indent=1)
