"""The sections of a run's report (`jobs.run_report`), each an HTML fragment built from the
run's records: every text that comes from data goes through `escape`."""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Sequence
from html import escape
from typing import Any

from jobs import report_charts as charts

# What each quarantine reason code means (README, "The lake and the ingest job").
REASONS = {
    "type_error": "a value not of its column's type",
    "null_required": "a required value missing (a blank entity id counts)",
    "invalid_id": "an entity id lookups cannot serve",
    "out_of_range": "below min, above max, or longer than max_length",
    "unknown_category": "a string outside the column's allowed values",
    "duplicate_entity_id": "an entity id found more than once in the batch",
    "corrupt_line": "a line the reader could not parse",
    "encoding_error": "bytes that are not valid text in the contract's encoding",
}
Metric = tuple[float | None, Any] | None  # (value, detail) as run_metrics holds it


def when(moment: datetime.datetime | None) -> str:
    """A time as the report writes it: UTC, to the second."""
    if moment is None:
        return "—"
    return escape(moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ"))


def summary(run: dict[str, Any], stopped_at: str | None) -> str:
    model = (
        f"{escape(run['model'])} v{run['version']} ({escape(run['task'])})"
        if run["model"] is not None
        else "— (the run did not reach scoring)"
    )
    facts = [
        ("State", f'<span class="state {escape(run["state"])}">{escape(run["state"])}</span>'),
        ("Mode", escape(run["mode"])),
        ("Batch", escape(run["batch_id"]) if run["batch_id"] is not None else "—"),
        ("Model", model),
        ("Recorded", when(run["created_at"])),
        ("Started", when(run["started_at"])),
        ("Finished", when(run["finished_at"])),
    ]
    if stopped_at is not None:
        facts.append(("Stopped at", escape(stopped_at)))
    rows = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in facts)
    error = f'<p class="error">{escape(run["error"])}</p>' if run["error"] else ""
    return f"<h1>Run {escape(run['run_id'])}</h1><table>{rows}</table>{error}"


def funnel(run: dict[str, Any], reasons: Metric, unpublished: Metric) -> str:
    """Rows at each step, the quarantine by reason and the ids publish left out."""
    steps = [
        ("read", run["rows_read"], "rows in the batch's files"),
        ("accepted", run["rows_accepted"], "rows that passed validation"),
        ("quarantined", run["rows_quarantined"], "rows rejected, with their reasons"),
        ("requested", run["rows_requested"] or None, "score requests scored with the run"),
        ("scored", run["rows_scored"], "rows the model scored"),
        ("published", run["rows_published"], "predictions made visible to lookups"),
        ("unpublished", run["rows_unpublished"] or None, "scored rows with unservable ids"),
    ]
    known = [(name, rows, meaning) for name, rows, meaning in steps if rows is not None]
    html = ["<h2>Row funnel</h2>"]
    if not known:
        return html[0] + "<p>No rows were counted: the run stopped before its first count.</p>"
    html.append(
        _table(
            ("step", "rows", "what"),
            [(escape(n), _count(r), escape(m)) for n, r, m in known],
            numeric=(1,),
        )
    )
    html.append(
        _image(
            charts.horizontal_bars([n for n, _, _ in known], [float(r) for _, r, _ in known]),
            "Rows at each step of the run: " + ", ".join(f"{n} {r:,}" for n, r, _ in known) + ".",
        )
    )
    if run["rows_quarantined"]:
        html.append(_reasons(run["rows_quarantined"], reasons))
    if unpublished is not None:
        examples = ", ".join(escape(str(e)) for e in (unpublished[1] or {}).get("examples", []))
        html.append(
            f"<p>{_count(unpublished[0])} scored rows were not published: their entity ids "
            f"cannot be served (control characters, or too long). For example: "
            f"<code>{examples or '—'}</code></p>"
        )
    return "".join(html)


def _reasons(quarantined: int, reasons: Metric) -> str:
    if reasons is None or not isinstance(reasons[1], dict):
        return (
            "<h3>Quarantined rows by reason</h3><p>The reasons were not counted for this run "
            "(its ingest did not record them): the quarantine table holds them per row.</p>"
        )
    counted = sorted(reasons[1].items(), key=lambda item: (-item[1], item[0]))
    rows = [
        (
            f"<code>{escape(code)}</code>",
            _count(n),
            f"{n / quarantined:.1%}",
            escape(REASONS.get(code, "")),
        )
        for code, n in counted
    ]
    return (
        "<h3>Quarantined rows by reason</h3>"
        + _table(("reason", "rows", "of quarantined", "the row has"), rows, numeric=(1, 2))
        + _image(
            charts.horizontal_bars([c for c, _ in counted], [float(n) for _, n in counted]),
            "Quarantined rows by reason: " + ", ".join(f"{c} {n:,}" for c, n in counted) + ".",
        )
        + '<p class="note">A row with several reasons counts once under each of them (and '
        "once however many of its columns broke the same rule), so these can add up to more "
        f"than the {quarantined:,} quarantined rows.</p>"
    )


def scores(run: dict[str, Any], metrics: dict[str, tuple[float | None, Any]]) -> str:
    """The score histogram, the shares per reference bin with the PSI, and the quantiles."""
    html = ["<h2>Scores against the training reference</h2>"]
    histogram = metrics.get("score_histogram")
    if histogram is None:
        return html[0] + "<p>No scores were recorded for this run.</p>"
    reference = run["reference_scores"]
    psi = metrics.get("psi")
    if psi is not None and psi[0] is not None:
        bins = len(psi[1]["expected"])
        noise = (bins - 1) / max(run["rows_scored"] or 0, 1)
        html.append(
            f"<p><strong>PSI {psi[0]:.4f}</strong> against the training reference (below 0.1 "
            "stable, 0.1 to 0.25 worth a look, above 0.25 a shift). From this many rows of an "
            f"unchanged distribution, sampling alone gives about {noise:.4f}.</p>"
        )
        labels = _bin_labels(psi[1]["edges"])
        html.append(
            _image(
                charts.grouped_bars(
                    labels,
                    [
                        charts.Series("training reference", charts.GREY, psi[1]["expected"]),
                        charts.Series("this run", charts.BLUE, psi[1]["actual"]),
                    ],
                    "share of scores",
                ),
                f"Share of scores in each of the training reference's {bins} bins, training "
                f"against this run; PSI {psi[0]:.4f}.",
            )
        )
    else:
        html.append("<p>No training reference for this model version: drift not computed.</p>")
    edges, counts = histogram[1]["edges"], histogram[1]["counts"]
    html.append(
        _image(
            charts.grouped_bars(
                [f"{edge:.3g}" for edge in edges[:-1]],
                [charts.Series("this run's scores", charts.BLUE, counts)],
                "rows",
            ),
            f"Histogram of this run's {sum(counts):,} scores in {len(counts)} bins from "
            f"{edges[0]:.3g} to {edges[-1]:.3g}.",
        )
    )
    run_quantiles = (metrics.get("score_quantiles") or (None, {}))[1] or {}
    trained = (reference or {}).get("quantiles", {})
    rows = [
        ("mean", metrics.get("score_mean", (None, None))[0], (reference or {}).get("mean")),
        ("std", metrics.get("score_std", (None, None))[0], (reference or {}).get("std")),
    ] + [(name, run_quantiles.get(name), trained.get(name)) for name in sorted(run_quantiles)]
    html.append(
        _table(
            ("figure", "this run", "training reference"),
            [(escape(name), _score(mine), _score(theirs)) for name, mine, theirs in rows],
            numeric=(1, 2),
        )
    )
    return "".join(html)


def timings(run: dict[str, Any], stages: list[dict[str, Any]], expected: Sequence[str]) -> str:
    """Each stage's latest real attempt: state, start and seconds; the stages never reached."""
    rows = [
        (
            escape(s["stage"]),
            f"{s['attempt']} of {s['attempts']}",
            f'<span class="state {escape(s["state"])}">{escape(s["state"])}</span>',
            when(s["started_at"]),
            f"{s['seconds']:.1f}" if s["seconds"] is not None else "—",
            escape(s["error"] or ""),
        )
        for s in stages
    ]
    seen = {s["stage"] for s in stages}
    missing = [stage for stage in expected if stage not in seen]
    rows += [(escape(stage), "—", "not reached", "—", "—", "") for stage in missing]
    html = "<h2>Stage timings</h2>" + _table(
        ("stage", "attempt", "state", "started", "seconds", "error"), rows, numeric=(4,)
    )
    timed = [(s["stage"], s["seconds"]) for s in stages if s["seconds"] is not None]
    if timed:
        html += _image(
            charts.horizontal_bars([n for n, _ in timed], [t for _, t in timed], unit=" s"),
            "Seconds per stage: " + ", ".join(f"{n} {t:.1f} s" for n, t in timed) + ".",
        )
    return html


def comparison(run: dict[str, Any], note: str | None, figures: dict[str, Any] | None) -> str:
    """A rescore's predictions against the champion's for the same entities."""
    html = "<h2>Comparison with the champion</h2>"
    if figures is None:
        return html + f"<p>{escape(note or '')}</p>"
    compared = int(figures["compared"])
    champion = f"v{figures['champion_version']}"
    if compared == 0:
        return html + f"<p>No entity of this run is served by the champion ({champion}).</p>"
    rows = [
        ("entities compared", _count(compared)),
        ("of this run's published rows", f"{compared / max(run['rows_published'] or 0, 1):.1%}"),
        ("mean absolute score difference", _score(figures["mean_abs"])),
        ("mean score difference (this run minus champion)", _score(figures["mean_diff"])),
        ("largest absolute difference", _score(figures["max_abs"])),
        ("share with a different label", f"{figures['changed_share']:.2%}"),
    ]
    bound = float(figures["bound"])
    width = 2 * bound / len(figures["histogram"])
    labels = [f"{-bound + i * width:.2g}" for i in range(len(figures["histogram"]))]
    return (
        html + f"<p>This run (v{run['version']}) against the version served as champion "
        f"({champion}), entity by entity.</p>"
        + _table(("figure", "value"), rows, numeric=(1,))
        + _image(
            charts.grouped_bars(
                labels,
                [charts.Series("entities", charts.ORANGE, figures["histogram"])],
                "entities",
            ),
            f"Histogram of score differences (this run minus champion {champion}) over "
            f"{compared:,} entities, from {-bound:.3g} to {bound:.3g}.",
        )
    )


def _bin_labels(edges: Sequence[float]) -> list[str]:
    if not edges:
        return ["all"]
    inner = [f"{a:.3g}\u2013{b:.3g}" for a, b in itertools.pairwise(edges)]
    return [f"≤{edges[0]:.3g}", *inner, f">{edges[-1]:.3g}"]


def _image(svg: str, alt: str) -> str:
    return f'<img src="{charts.data_url(svg)}" alt="{escape(alt)}">'


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table of already escaped cells; `numeric` columns are right-aligned."""

    def cell(tag: str, i: int, text: str) -> str:
        return f'<{tag} class="n">{text}</{tag}>' if i in numeric else f"<{tag}>{text}</{tag}>"

    header = "".join(cell("th", i, escape(h)) for i, h in enumerate(head))
    body = "".join(
        "<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _count(value: float | None) -> str:
    return "—" if value is None else f"{int(value):,}"


def _score(value: float | None) -> str:
    return "—" if value is None else f"{float(value):.4f}"
