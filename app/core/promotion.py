"""Promotion rules: move an alias to a job's new version, always or when a metric is better.

A job request may carry `"promote": {"alias": "production", "if_better": "val_rmse"}`. On
success the alias is set when the model does not have it yet; with `if_better` it is moved only
when the new version's metric beats the current one's (strictly), else always. The decision and
its reason are recorded on the job (`promotion`), in the transaction that publishes the version.
"""

from __future__ import annotations

import math
from typing import Any

from app.core.errors import Invalid

# Which way is better, per metric a version records (models/trainer.py), by task.
LOWER, HIGHER = "lower", "higher"
METRICS: dict[str, dict[str, str]] = {
    "regression": {
        "val_rmse": LOWER,
        "val_mae": LOWER,
        "val_loss": LOWER,
        "train_loss": LOWER,
        "val_r2": HIGHER,
    },
    "classification": {"val_accuracy": HIGHER, "val_loss": LOWER, "train_loss": LOWER},
}


def check_rule(rule: dict[str, Any] | None, task: str) -> None:
    """Invalid (422) when `if_better` names a metric that `task`'s versions do not record."""
    metric = (rule or {}).get("if_better")
    if metric is None:
        return
    known = METRICS[task]
    if metric not in known:
        raise Invalid(
            f"promote.if_better: '{metric}' is not a metric of {task} models; choose one of "
            f"{', '.join(sorted(known))}"
        )


def decide(
    rule: dict[str, Any],
    version: int,
    metrics: dict[str, Any],
    current: int | None,
    current_metrics: dict[str, Any] | None,
) -> dict[str, Any]:
    """{alias, version, moved, previous, reason}: whether `rule`'s alias goes to `version`,
    given the version it names now (`current`, None when unset) and that version's metrics."""
    alias, metric = rule["alias"], rule.get("if_better")
    out = {"alias": alias, "version": version, "previous": current, "metric": metric}
    if current is None:
        return {**out, "moved": True, "reason": f"the model had no alias '{alias}'"}
    if metric is None:
        return {**out, "moved": True, "reason": "no if_better rule: the alias always moves"}
    new, old = metrics.get(metric), (current_metrics or {}).get(metric)
    if not _finite(old):
        return {
            **out,
            "moved": True,
            "reason": f"version {current} (the alias's) has no {metric}; version {version} has "
            f"{metric}={new}",
        }
    if not _finite(new):
        return {**out, "moved": False, "reason": f"version {version} has no {metric}"}
    lower = METRICS_DIRECTION.get(metric) == LOWER
    better = new < old if lower else new > old
    relation = "lower" if lower else "higher"
    verdict = "better" if better else "not better"
    return {
        **out,
        "moved": better,
        "reason": f"{metric} {new:.6g} of version {version} is {verdict} than {old:.6g} of "
        f"version {current} ({relation} is better)",
    }


METRICS_DIRECTION = {name: way for table in METRICS.values() for name, way in table.items()}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
