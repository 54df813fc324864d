"""The feature drift section of a run's report (`jobs.run_report`): every feature's drift
against the model's training data in a table, and the histograms of the most drifted ones,
training against this batch, from `precompute.feature_drift`."""

from __future__ import annotations

from html import escape
from typing import Any

from jobs import report_charts as charts
from jobs.report_sections import _image, _table
from precompute.database import Database

CHARTED = 3  # the most drifted features drawn as histograms
MARKS = {"ok": "ok", "warn": "⚠ warn", "fail": "✖ fail"}


def feature_drift(db: Database, run_id: str) -> str:
    """The section; a line saying why when the check measured no drift for the run."""
    rows = db.fetch(
        "writer",
        """
        SELECT feature, measure, psi, estimated, missing_share, training_missing_share, level,
               thresholds, detail
          FROM precompute.feature_drift WHERE run_id = %s ORDER BY psi DESC, feature
        """,
        (run_id,),
    )
    html = ["<h2>Feature drift against the training data</h2>"]
    if not rows:
        return html[0] + (
            "<p>Not measured: the run scored no batch, a profile is missing (the model version "
            "or the batch predates profiling), or the batch is too small to tell.</p>"
        )
    html.append(
        "<p>Per feature, the population stability index of the batch against the model "
        "version's training data (numbers on the training deciles, strings and booleans on "
        "the training categories and one bucket for the rest) and the change of the missing "
        "share, against the thresholds in the settings or the contract.</p>"
    )
    html.append(
        _table(
            ("feature", "measure", "PSI", "missing", "training missing", "limits", "level"),
            [_row(r) for r in rows],
            numeric=(2, 3, 4),
        )
    )
    for feature, measure, psi, *_rest, detail in rows[:CHARTED]:
        what = "bins of the training deciles" if measure == "psi" else "training categories"
        html.append(f"<h3>{escape(feature)}</h3>")
        html.append(
            _image(
                charts.grouped_bars(
                    detail["labels"],
                    [
                        charts.Series("training", charts.GREY, detail["expected"]),
                        charts.Series("this batch", charts.BLUE, detail["actual"]),
                    ],
                    "share of rows",
                ),
                f"Share of {feature} values in each of the {what}, training against this "
                f"batch; PSI {psi:.4f}.",
            )
        )
    return "".join(html)


def _row(record: tuple[Any, ...]) -> list[str]:
    feature, measure, psi, estimated, missing, trained, level, limits, _ = record
    note = " (estimated)" if estimated else ""
    return [
        escape(feature),
        escape(measure),
        f"{psi:.4f}{note}",
        f"{missing:.2%}",
        f"{trained:.2%}",
        escape(
            f"PSI warn {limits['warn']} / fail {limits['fail']}; missing ±"
            f"{limits['missing_warn']:.0%} / ±{limits['missing_fail']:.0%}"
        ),
        escape(MARKS[level]),
    ]
