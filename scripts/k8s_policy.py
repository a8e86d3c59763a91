"""The promises of deploy/kubernetes, checked on rendered manifests (scripts/k8s-check.sh).

Schema validation says each object is well formed; this says the objects fit together and
keep what docs/deploy.md promises: probes on the right routes, a start-up allowance well
above the measured start-up, requests and limits, the key from a Secret, settings from the
generated ConfigMap, selectors that match the pods, a termination grace longer than the
pause plus the drain, a non-root read-only container, and a GPU limit where it belongs.

    python scripts/k8s_policy.py RENDERED.yaml...
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

import yaml

# Worst start-up to /ready measured (bench/startup.py): 9.0 s on a loaded 2-vCPU machine.
MEASURED_STARTUP_S = 9.0


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check(path: Path) -> None:
    objects = [o for o in yaml.safe_load_all(path.read_text()) if o]
    deployment = one(objects, "Deployment")
    service = one(objects, "Service")
    hpa = one(objects, "HorizontalPodAutoscaler")
    pdb = one(objects, "PodDisruptionBudget")
    config = one(objects, "ConfigMap")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    (container,) = spec["containers"]

    assert selects(deployment["spec"]["selector"]["matchLabels"], labels), "Deployment selector"
    assert selects(service["spec"]["selector"], labels), "Service selector misses the pods"
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels), "PDB selector"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2, "fewer than 2 replicas leaves the PDB nothing"
    metrics = hpa["spec"]["metrics"]
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in metrics)
    queued = [m for m in metrics if m["type"] == "Pods"]
    if "cpu-autoscaling" not in path.name:
        assert [m["pods"]["metric"]["name"] for m in queued] == ["rnnlm_queued_sequences"]

    for probe, route in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        assert container[probe]["httpGet"]["path"] == route, f"{probe} is not on {route}"
    startup = container["startupProbe"]
    allowance = startup["periodSeconds"] * startup["failureThreshold"]
    assert allowance >= 5 * MEASURED_STARTUP_S, f"start-up allowance {allowance} s is too tight"

    resources = container["resources"]
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= resources[part].keys(), f"resources.{part}"

    env = {e["name"]: e for e in container["env"]}
    assert env["RNNLM_API_KEY"]["valueFrom"]["secretKeyRef"]["name"], "API key not from a Secret"
    (source,) = container["envFrom"]
    assert source["configMapRef"]["name"] == config["metadata"]["name"]
    settings = config["data"]
    assert all(k.startswith("RNNLM_") for k in settings), "ConfigMap holds non-RNNLM_ keys"

    drain = float(env["RNNLM_SHUTDOWN_GRACE_S"]["value"])
    pause = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = spec["terminationGracePeriodSeconds"]
    assert grace > pause + drain, f"grace {grace} s <= preStop {pause} s + drain {drain} s"

    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts, "a read-only root needs a writable /tmp"

    gpus = resources["limits"].get("nvidia.com/gpu")
    if path.name.startswith("gpu"):
        assert gpus and int(gpus) >= 1, "the gpu overlay has no nvidia.com/gpu limit"
        assert settings["RNNLM_DEVICE"] == "cuda"
    elif path.name.startswith("cpu"):
        assert gpus is None and settings["RNNLM_DEVICE"] == "cpu"
    if "bundles-volume" in path.name:
        claim = one(objects, "PersistentVolumeClaim")["metadata"]["name"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        mount = next(m for m in container["volumeMounts"] if m["name"] in volumes)
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim
        assert mount["mountPath"] == env["RNNLM_CHECKPOINT_DIR"]["value"] and mount["readOnly"]


def main() -> int:
    failed = 0
    for name in sys.argv[1:]:
        try:
            check(Path(name))
        except (AssertionError, KeyError, StopIteration, ValueError) as exc:
            failed += 1
            where = traceback.extract_tb(exc.__traceback__)[-1].line  # the failed check
            print(f"FAIL {name}: {exc!r} at `{where}`")
        else:
            print(f"ok {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
