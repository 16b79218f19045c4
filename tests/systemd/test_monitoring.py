"""The monitoring assets the package installs: the Prometheus alerting rules pass promtool's check
and their own unit tests, and the rules and the Grafana dashboard ask only for metrics qworker
serves. Needs promtool (Debian's prometheus) and python3-yaml; no Redis, no worker."""

import json
import os
import re
import subprocess
import tempfile

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = os.path.join(ROOT, "packaging", "prometheus", "qworker-rules.yml")
RULE_TESTS = os.path.join(ROOT, "packaging", "prometheus", "qworker-rules.test.yml")
DASHBOARD = os.path.join(ROOT, "packaging", "grafana", "qworker-dashboard.json")

# What /metrics serves, name -> type, as its `# TYPE` lines say. tests/e2e/test_metrics.py
# compares it with a live scrape, so that a metric renamed in src/ fails there.
SERVED = {
    "qworker_tasks_total": "counter",
    "qworker_task_duration_seconds": "histogram",
    "qworker_tasks_in_flight": "gauge",
    "qworker_tasks_waiting": "gauge",
    "qworker_concurrency": "gauge",
    "qworker_queue_length": "gauge",
    "qworker_queue_paused": "gauge",
    "qworker_scheduled_tasks": "gauge",
    "qworker_dead_tasks": "gauge",
    "qworker_redis_up": "gauge",
    "qworker_redis_reconnects_total": "counter",
    "qworker_fetch_duration_seconds": "histogram",
    "qworker_build_info": "gauge",
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_start_time_seconds": "gauge",
}

# Bare words of PromQL that are not metrics (functions and aggregations are told by their "(").
KEYWORDS = {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left",
            "group_right", "offset", "atan2", "inf", "nan"}


def promtool(*args):
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=30)


def grafana_query(q):
    """The PromQL inside a templating query: label_values(EXPR, label) asks for EXPR."""
    m = re.fullmatch(r"\s*label_values\(\s*(?:(.*),)?\s*\w+\s*\)\s*", q)
    if m:
        return m.group(1) or ""
    m = re.fullmatch(r"\s*query_result\((.*)\)\s*", q)
    return m.group(1) if m else q


def metric_names(expr):
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', " ", expr)  # label values
    e = re.sub(r"\$\{?\w+\}?", " ", e)  # Grafana's variables
    e = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", e)  # matchers (label names), ranges
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\boffset\s+-?\w+", " ", e)
    e = re.sub(r"(?<![\w:])\d+(?:\.\d*)?(?:[eE][+-]?\d+)?", " ", e)
    return {m.group(1) for m in re.finditer(r"([A-Za-z_:][\w:]*)(\s*\()?", e)
            if not m.group(2) and m.group(1).lower() not in KEYWORDS}


def served(name):
    if name in SERVED:
        return SERVED[name] != "histogram"  # a histogram is only its _bucket, _sum and _count
    base, suffix = re.fullmatch(r"(.*?)(_bucket|_sum|_count)?", name).groups()
    return suffix is not None and SERVED.get(base) == "histogram"


def dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def targets(dash):
    for p in dash["panels"]:
        yield from ((p, t) for t in p.get("targets", []))
        for inner in p.get("panels", []):  # a collapsed row keeps its panels
            yield from ((inner, t) for t in inner.get("targets", []))


def dashboard_exprs(dash):
    exprs = [t["expr"] for _, t in targets(dash)]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            exprs.append(grafana_query(q))
    return exprs


def rules():
    with open(RULES) as f:
        return [r for g in yaml.safe_load(f)["groups"] for r in g["rules"]]


@pytest.mark.parametrize("expr,names", [
    ('histogram_quantile(0.99, sum by (le, queue) (rate(a_bucket{le!="1"}[$__rate_interval])))',
     {"a_bucket"}),
    ("sum without (outcome) (rate(b{outcome=~\"x|y\"}[5m])) / on (job) group_left c > 0.1",
     {"b", "c"}),
    ("max without (instance) (deriv(q[10m])) > 0 and min_over_time(r[10m] offset 1h) > 1e3",
     {"q", "r"}),
    ("60 * sum(rate(process_cpu_seconds_total[1m])) and on (instance, job) info",
     {"process_cpu_seconds_total", "info"}),
    ("absent(up{job=~\".*qworker.*\"})", {"up"}),
    (grafana_query("label_values(qworker_build_info, instance)"), {"qworker_build_info"}),
    (grafana_query("label_values(instance)"), set()),
])
def test_metric_names_are_found_and_only_them(expr, names):
    assert metric_names(expr) == names


def test_histograms_are_served_only_by_their_series():
    assert served("qworker_task_duration_seconds_bucket") and served("qworker_tasks_total")
    assert not served("qworker_task_duration_seconds")
    assert not served("qworker_tasks_total_count") and not served("qworker_task_duration")


def test_rules_pass_promtool_check_without_a_warning():
    r = promtool("check", "rules", "--lint=all", "--lint-fatal", RULES)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "SUCCESS" in out and not re.search(r"warn", out, re.I), out


def test_rules_pass_their_unit_tests():
    r = promtool("test", "rules", RULE_TESTS)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_every_alert_has_a_severity_and_says_what_and_why():
    alerts = rules()
    assert alerts and all("alert" in r for r in alerts)
    for r in alerts:
        assert r["labels"]["severity"] in ("critical", "warning"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


def test_rules_ask_only_for_served_metrics():
    for r in rules():
        names = metric_names(r["expr"])
        assert names, r["alert"]
        assert all(served(n) or n == "up" for n in names), (r["alert"], names)


def test_dashboard_is_whole():
    dash = dashboard()
    assert dash["title"] and dash["uid"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), ids
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["multi"] and grafana_query(instance["query"]) == "qworker_build_info"
    # A uid from someone's own Grafana would point nowhere on any other.
    for p, t in targets(dash):
        for ds in (p.get("datasource"), t.get("datasource")):
            assert ds == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        # Several workers are scraped: a panel that ignores the choice of instance misleads.
        assert '$instance"' in t["expr"], p["title"]


def test_dashboard_asks_only_for_served_metrics():
    for expr in dashboard_exprs(dashboard()):
        names = metric_names(expr)
        assert names and all(map(served, names)), (expr, names)


def test_dashboard_queries_are_promql():
    # promtool parses them as recording rules, with Grafana's variables given values.
    exprs = dashboard_exprs(dashboard())
    group = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"q{i}", "expr": e.replace("$__rate_interval", "1m").replace("$instance", ".*")}
        for i, e in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        yaml.safe_dump(group, f)
        f.flush()
        r = promtool("check", "rules", f.name)
    assert r.returncode == 0, r.stdout + r.stderr
