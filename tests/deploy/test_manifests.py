"""Every rendered manifest validates offline against the Kubernetes API schemas.

tests/deploy/validate_manifests.mjs runs kubernetes-models' generated validators (types,
required fields, enums) and an unknown-field check built from the same package's type
declarations; @kubernetes-models/prometheus-operator covers ServiceMonitor, PodMonitor and
PrometheusRule. No API server, no network.
"""

from __future__ import annotations

import copy
import os

import pytest

from deploy_support import (CASES, TESTS_DIR, TOOLS_DIR, INSTALL_HINT, render_case, run,
                            tempdir, write_json)

VALIDATOR = TESTS_DIR / "validate_manifests.mjs"


def validate(objects):
    if not (TOOLS_DIR / "node_modules" / "kubernetes-models" / "package.json").is_file():
        pytest.fail(f"kubernetes-models missing in {TOOLS_DIR / 'node_modules'}: {INSTALL_HINT}")
    path = write_json(tempdir() / "manifests.json", objects)
    env = dict(os.environ, ONEDOMAIN_TOOLS_DIR=str(TOOLS_DIR))
    return run(["node", str(VALIDATOR), str(path)], check=False, env=env)


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_manifests_validate(case):
    docs = render_case(case)
    proc = validate(docs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(docs)} valid, 0 invalid" in proc.stdout, proc.stdout


def test_validator_catches_wrong_types_and_unknown_fields():
    """The validator is only worth something if it fails on a broken manifest."""
    docs = copy.deepcopy(render_case("hirecj"))
    for d in docs:
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-dataplane"):
            c = d["spec"]["template"]["spec"]["containers"][0]
            c["readinessProbe"]["periodSecond"] = 2          # misspelt field
            c["ports"][0]["containerPort"] = "3456"           # wrong type
            d["spec"]["template"]["spec"]["terminationGracePeriod"] = 40  # misspelt field
        if d["kind"] == "HorizontalPodAutoscaler":
            d["spec"]["scaleTargetRef"].pop("name")           # required field
        if d["kind"] == "PrometheusRule":
            d["spec"]["groups"][0]["rules"][0]["alrt"] = "x"  # misspelt field in a CRD
        if d["kind"] == "Service" and d["metadata"]["name"].endswith("-dataplane"):
            d["spec"]["type"] = "LoadBalancr"                 # not in the enum
    proc = validate(docs)
    out = proc.stdout
    assert proc.returncode == 1, out
    for needle in ("readinessProbe.periodSecond: unknown field",
                   "containerPort must be integer",
                   "spec.terminationGracePeriod: unknown field",
                   "scaleTargetRef must have required property name",
                   "rules[0].alrt: unknown field",
                   "type must be equal to one of the allowed values"):
        assert needle in out, f"validator missed {needle!r}:\n{out}"
