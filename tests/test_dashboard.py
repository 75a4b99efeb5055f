"""docs/grafana-dashboard.json charts only what /metrics really exports: every metric name in every PromQL
expression (panels and template variables) appears in a scrape of a server that answered a few requests."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import MakeClient, dense_vectors

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana-dashboard.json"
# PromQL words that are not metric names: keywords, aggregation modifiers, and the label names after by/without
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def expressions(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query":
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers outside label matchers, ranges, strings and
    by/without lists, that are not functions (followed by "(") nor keywords. label_values(metric, label): metric."""
    label_values = re.fullmatch(r"\s*label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*\w+\s*\)\s*", expr)
    if label_values:
        return {label_values.group(1)}
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings first: they may hold braces
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if not call and name not in _KEYWORDS:
            names.add(name)
    return names


def exported_names(scrape: str) -> set[str]:
    return {re.match(r"[a-zA-Z_:][\w:]*", line).group(0) for line in scrape.splitlines() if line and line[0] != "#"}


def test_metric_names_parse() -> None:
    expr = 'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{x=~"$i", s="{}"}[$__rate_interval]))) / b'
    assert metric_names(expr) == {"a_bucket", "b"}
    assert metric_names("label_values(hamdex_build_info, instance)") == {"hamdex_build_info"}


def test_dashboard_reads_only_exported_metrics(make_client: MakeClient, dense_model_dir: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    client = make_client(dense_model_dir)
    vectors = dense_vectors(3).tolist()
    assert client.post("/v1/encode", json={"inputs": vectors}).status_code == 200
    items = [{"id": f"i{n}", "input": v} for n, v in enumerate(vectors)]
    assert client.post("/v1/items", json={"items": items}).status_code == 200
    assert client.post("/v1/search", json={"queries": [{"input": vectors[0]}], "k": 2}).status_code == 200
    assert client.post("/v1/search", json={"queries": [{"id": "i0"}], "radius": 3}).status_code == 200
    assert client.get("/v1/items/missing").status_code == 404
    scrape = client.get("/metrics").text

    exported = exported_names(scrape)
    read = {name for expr in expressions(dashboard) for name in metric_names(expr)}
    assert all(metric_names(expr) for expr in expressions(dashboard)), "an expression that reads no metric"
    assert read - exported == set(), f"the dashboard reads metrics /metrics does not export: {read - exported}"
    # the charts the operations guide promises
    for name in ("hamdex_http_requests_total", "hamdex_http_request_errors_total", "hamdex_batch_items_sum"):
        assert name in read
    quantiles = [e for e in expressions(dashboard) if "histogram_quantile" in e]
    assert any("hamdex_http_request_duration_seconds_bucket" in e for e in quantiles)


def test_a_name_that_is_not_exported_is_caught() -> None:
    scrape = '# TYPE hamdex_http_requests_total counter\nhamdex_http_requests_total{route="/"} 1.0\n'
    assert metric_names("rate(hamdex_requests_total[5m])") - exported_names(scrape) == {"hamdex_requests_total"}
