"""deploy/grafana/trainserve.json: valid JSON, and it charts only metrics the service has."""

import json
import re
from pathlib import Path

from app.core.metrics import sample_names

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "trainserve.json"


def expressions(dashboard: dict) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_the_dashboard_charts_only_metrics_that_exist():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "trainserve" and dashboard["panels"]
    exprs = expressions(dashboard)
    used = {name for e in exprs for name in re.findall(r"\btrainserve_[a-z0-9_]+", e)}
    assert used, exprs
    assert used <= sample_names(), used - sample_names()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_every_metric_is_charted():
    """A metric added without a chart is caught here (histograms by their _bucket)."""
    exprs = " ".join(expressions(json.loads(DASHBOARD.read_text())))
    for name in sample_names():
        if name.endswith(("_sum", "_count")):
            continue
        assert re.search(rf"\b{name}\b", exprs), f"{name} is on no panel"
