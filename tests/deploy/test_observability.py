"""Alert rules (promtool), the Grafana dashboard's structure, and the chart's copies of both.

Metric names are checked against the metrics contract (DESIGN.md, plus the control plane's
fleet metrics named in issue 8): a dashboard or alert on a metric nobody exports would be
silently empty.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml

from deploy_support import (CHART_DIR, DEPLOY_DIR, INSTALL_HINT, one, render_case, run)

ALERTS = DEPLOY_DIR / "prometheus" / "alerts.yaml"
ALERTS_TEST = DEPLOY_DIR / "prometheus" / "alerts_test.yaml"
DASHBOARD = DEPLOY_DIR / "grafana" / "onedomain-fleet.json"

# Data plane (:9901) and control plane (:9902) metric families.
CONTRACT = {
    "onedomain_downstream_connections_active": "gauge",
    "onedomain_downstream_connections_total": "counter",
    "onedomain_http_requests_total": "counter",
    "onedomain_http_request_duration_seconds": "histogram",
    "onedomain_websocket_upgrades_total": "counter",
    "onedomain_websocket_connections_active": "gauge",
    "onedomain_websocket_bytes_total": "counter",
    "onedomain_upstream_connections_active": "gauge",
    "onedomain_config_version": "gauge",
    "onedomain_controlplane_connected": "gauge",
    "onedomain_fleet_nodes_connected": "gauge",
    "onedomain_fleet_config_version": "gauge",
    "onedomain_fleet_downstream_connections_active": "gauge",
    "onedomain_fleet_websocket_connections_active": "gauge",
    "onedomain_fleet_websocket_upgrades_total": "counter",
    "onedomain_fleet_http_requests_total": "counter",
    "onedomain_fleet_node_nacked": "gauge",
    "onedomain_fleet_last_report_age_seconds": "gauge",
    "onedomain_config_push_seconds": "histogram",
    "onedomain_admin_requests_total": "counter",
    "onedomain_config_latest_version": "gauge",
    "onedomain_limit_rejections_total": "counter",
    # Rollouts (issue 19).
    "onedomain_rollout_state": "gauge",
    "onedomain_rollout_wave": "gauge",
    "onedomain_rollout_gate_value": "gauge",
    "onedomain_rollouts_total": "counter",
    "onedomain_rollout_running_seconds": "gauge",
    "onedomain_rollout_budget_seconds": "gauge",
}


def metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b(onedomain_[a-z0-9_]+)", expr))
    out = set()
    for n in names:
        base = n
        for suffix in ("_bucket", "_sum", "_count"):
            if n.endswith(suffix) and CONTRACT.get(n[: -len(suffix)]) == "histogram":
                base = n[: -len(suffix)]
        out.add(base)
    return out


def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.fail(f"promtool not found: {INSTALL_HINT} (Debian package prometheus)")
    return path


# ---- alerts ----------------------------------------------------------------------------------

def test_promtool_check_rules():
    proc = run([promtool(), "check", "rules", str(ALERTS)])
    assert "SUCCESS" in proc.stdout, proc.stdout


def test_promtool_test_rules():
    proc = run([promtool(), "test", "rules", str(ALERTS_TEST)])
    assert "SUCCESS" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_alerts_cover_issue_and_use_contract_metrics():
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    for required in ("OnedomainNoNodesConnected", "OnedomainConfigNacked",
                     "OnedomainConfigVersionSkew", "OnedomainUpgradeRejectionsSpiking",
                     "OnedomainHttp5xxRatioHigh", "OnedomainDataplaneNotReporting",
                     "OnedomainRolloutRolledBack", "OnedomainRolloutStuck"):
        assert required in alerts, required
    assert alerts["OnedomainConfigVersionSkew"]["for"] == "5m"
    for name, rule in alerts.items():
        used = metric_names(rule["expr"])
        assert used, name
        assert used <= CONTRACT.keys(), (name, used - CONTRACT.keys())
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    # Every alert is exercised by the promtool unit tests.
    tested = {t["alertname"] for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
              for t in case.get("alert_rule_test", [])}
    assert tested == set(alerts), set(alerts) ^ tested


# ---- dashboard -------------------------------------------------------------------------------

def all_panels(dash):
    for p in dash["panels"]:
        yield p
        for inner in p.get("panels", []):
            yield inner


def test_dashboard_structure():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    ids = [p["id"] for p in all_panels(dash)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    assert all(isinstance(i, int) and i > 0 for i in ids)
    graph_panels = [p for p in all_panels(dash) if p["type"] != "row"]
    assert len(graph_panels) >= 10
    for p in graph_panels:
        assert p["title"], p["id"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        targets = p["targets"]
        assert targets, p["title"]
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]
        for t in targets:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            assert t["expr"].strip(), p["title"]
            used = metric_names(t["expr"])
            assert used and used <= CONTRACT.keys(), (p["title"], used - CONTRACT.keys())
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
        gp = p["gridPos"]
        assert 0 <= gp["x"] and gp["x"] + gp["w"] <= 24 and gp["h"] > 0, p["title"]
    # No two panels overlap on the grid.
    cells = set()
    for p in all_panels(dash):
        gp = p["gridPos"]
        for x in range(gp["x"], gp["x"] + gp["w"]):
            for y in range(gp["y"], gp["y"] + gp["h"]):
                assert (x, y) not in cells, f"panel {p['title']} overlaps another"
                cells.add((x, y))
    # Hard-coded data source uids would break on import.
    text = DASHBOARD.read_text()
    for uid in re.findall(r'"uid":\s*"([^"]*)"', text):
        assert uid in ("${datasource}", "-- Grafana --", dash["uid"]), uid


def test_dashboard_covers_issue_panels():
    dash = json.loads(DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in all_panels(dash) for t in p.get("targets", []))
    for needle in ("onedomain_fleet_downstream_connections_active",
                   "onedomain_fleet_websocket_connections_active",
                   "sum by (result) (rate(onedomain_fleet_websocket_upgrades_total",
                   "sum by (route) (rate(onedomain_fleet_http_requests_total",
                   'code_class="5xx"',
                   "histogram_quantile(0.5,", "histogram_quantile(0.99,",
                   "onedomain_fleet_nodes_connected", "onedomain_fleet_config_version",
                   "onedomain_config_latest_version", "sum by (node)",
                   "onedomain_rollout_state", "onedomain_rollout_wave",
                   "onedomain_rollout_gate_value", "onedomain_rollouts_total"):
        assert needle in exprs, needle


# ---- chart copies ------------------------------------------------------------------------------

def test_chart_copies_are_identical():
    for original, copy in ((ALERTS, CHART_DIR / "files" / "alerts.yaml"),
                           (DASHBOARD, CHART_DIR / "files" / "onedomain-fleet.json")):
        assert copy.read_bytes() == original.read_bytes(), (
            f"{copy} differs from {original}: run deploy/helm/sync-files.sh")
    run([str(DEPLOY_DIR / "helm" / "sync-files.sh"), "--check"])


def test_chart_renders_the_same_rules_and_dashboard():
    docs = render_case("hirecj")
    rule = one(docs, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    cm = one(docs, "ConfigMap", "-dashboard")
    assert json.loads(cm["data"]["onedomain-fleet.json"]) == json.loads(DASHBOARD.read_text())
