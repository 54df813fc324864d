"""The Run report link on a check task in Airflow's UI (an operator extra link)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink, get_current_context

ATTRIBUTE = "precompute_report_url"


class RunReportLink(BaseOperatorLink):
    """The lookup API's page of the run the check task checked."""

    name = "Run report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        # Set by the check while it ran (`point_to`); Airflow reads the link at the end of the
        # same task instance, pass or fail, and keeps it with it.
        return str(getattr(operator, ATTRIBUTE, ""))


def with_report_link(check: Any) -> Any:
    """The check task (as its decorator returned it), with the Run report link."""
    check.operator.operator_extra_links = (RunReportLink(),)
    return check


def point_to(url: str) -> None:
    """Make the running task's Run report link open `url`."""
    setattr(get_current_context()["task"], ATTRIBUTE, url)
