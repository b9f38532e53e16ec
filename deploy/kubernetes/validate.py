#!/usr/bin/env python3
"""Renders the Kustomize targets under deploy/kubernetes and checks them offline, with no
cluster:

1. every document against its schema: built-in kinds against Kubernetes' own (the
   `kubernetes-validate` package's bundled JSON schemas, strict, so an unknown field is an
   error) at each version in K8S_VERSIONS; InferencePool and HTTPRoute against the JSON
   schemas derived from their released CRDs (schemas/, see crd_to_schema.py), with the
   InferencePool's CEL rules evaluated by hand; a kind with no schema is an error;
2. the endpoint picker's configuration (the `hearth-epp` ConfigMap) against
   schemas/endpointpickerconfig-v1alpha1.json, its plugin references, and every metric it
   maps against the names Hearth exports (crates/engine/src/scheduler/metrics.rs), so the
   manifests cannot drift from the code; likewise the autoscaler's metric;
3. what a schema cannot see: selectors that select the pods they are meant to, ports and
   names that refer to something rendered, the replicas' hardening (non-root, read-only
   root, no privilege escalation, no capabilities, RuntimeDefault seccomp, --sealed), their
   probes and the grace period against the 25 s drain, resources that match --threads,
   and (with --hearth BIN) that every flag passed to `hearth serve` exists.

    validate.py [--hearth BIN] [--self-test] [TARGET...]     (default: base example)

--self-test also breaks the rendered example in ways each check must catch, and fails if
any breakage passes. Rendering uses `kubectl kustomize` (kustomize v5 is built into
kubectl); without kubectl, a small renderer of the few Kustomize features used here
(resources, components, namespace, labels, images, configMapGenerator with merge, JSON
patches with `replace`) stands in, and when both exist they must agree.

Exit status 0 when everything passes; prints one line per target and a closing
"N passed, N failed".
"""

import argparse
import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml
from kubernetes_validate import utils as kv

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCHEMAS = HERE / "schemas"
METRICS_RS = ROOT / "crates" / "engine" / "src" / "scheduler" / "metrics.rs"

# The oldest minor the manifests need (preStop `sleep` is on by default from 1.30, and
# the extension supports the three newest minors), and the newest the package knows.
K8S_VERSIONS = ["1.33.0", "1.37.0"]
# hearth serve's drain (crates/server/src/lib.rs, DRAIN_TIMEOUT) and some slack.
DRAIN_S = 25
GRACE_SLACK_S = 5
HEARTH_POD = {"app.kubernetes.io/name": "hearth", "app.kubernetes.io/component": "model-server"}
EPP_CONFIG_KEY = "epp-config.yaml"

CRD_SCHEMAS = {
    ("inference.networking.k8s.io/v1", "InferencePool"): "inferencepool-v1.json",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproute-v1.json",
}


def hearth_metrics():
    """The metric names Hearth exports, from the engine's source."""
    text = METRICS_RS.read_text()
    names = set(re.findall(r'pub const \w+: &str = "(hearth_[a-z0-9_]+)";', text))
    if len(names) < 10:
        raise SystemExit(f"{METRICS_RS}: found only {len(names)} metric names; has the file moved?")
    return names


# ---------------------------------------------------------------------------------------
# Rendering


def render_kubectl(target):
    out = subprocess.run(["kubectl", "kustomize", str(target)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RenderError(f"kubectl kustomize {target}: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


class RenderError(Exception):
    pass


NAMESPACED_EXEMPT = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def render_fallback(target):
    """The Kustomize features these targets use, without name hashes."""
    target = Path(target)
    k = yaml.safe_load((target / "kustomization.yaml").read_text())
    docs = []
    for res in k.get("resources", []):
        path = target / res
        if path.is_dir():
            docs += render_fallback(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for comp in k.get("components", []):
        docs += render_fallback(target / comp)
    for gen in k.get("configMapGenerator", []):
        data = {}
        for lit in gen.get("literals", []):
            key, _, value = lit.partition("=")
            data[key] = value
        for f in gen.get("files", []):
            data[Path(f).name] = (target / f).read_text()
        if gen.get("behavior") == "merge":
            existing = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == gen["name"]]
            if not existing:
                raise RenderError(f"{target}: configMapGenerator {gen['name']}: nothing to merge into")
            existing[0]["data"].update(data)
        else:
            docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": gen["name"]}, "data": data})
    for lab in k.get("labels", []):
        for d in docs:
            d["metadata"].setdefault("labels", {}).update(lab["pairs"])
    for img in k.get("images", []):
        for d in docs:
            for c in containers(d):
                if c["image"].split(":")[0] == img["name"]:
                    c["image"] = f"{img.get('newName', img['name'])}:{img['newTag']}"
    for p in k.get("patches", []):
        t = p["target"]
        for d in docs:
            if d["kind"] == t.get("kind") and d["metadata"]["name"] == t.get("name"):
                for op in yaml.safe_load(p["patch"]):
                    if op["op"] != "replace":
                        raise RenderError(f"{target}: the stand-in renderer does only `replace`")
                    keys = [s.replace("~1", "/").replace("~0", "~") for s in op["path"].split("/")[1:]]
                    node = d
                    for key in keys[:-1]:
                        node = node[int(key)] if isinstance(node, list) else node[key]
                    node[int(keys[-1]) if isinstance(node, list) else keys[-1]] = op["value"]
    if "namespace" in k:
        for d in docs:
            if d["kind"] not in NAMESPACED_EXEMPT:
                d["metadata"]["namespace"] = k["namespace"]
            # As kustomize: a binding's service accounts are in the namespace too.
            for s in d.get("subjects", []) if d["kind"].endswith("RoleBinding") else []:
                if s.get("kind") == "ServiceAccount":
                    s["namespace"] = k["namespace"]
    return docs


def strip_hashes(docs):
    """kubectl's output with the ConfigMaps' name hashes taken off, to compare with the
    stand-in renderer's."""
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    text = yaml.safe_dump_all(docs, sort_keys=True)
    for name in names:
        base = re.sub(r"-[a-z0-9]{10}$", "", name)
        text = re.sub(rf"\b{re.escape(name)}\b", base, text)
    return [d for d in yaml.safe_load_all(text) if d]


def canonical(docs):
    return sorted(json.dumps(d, sort_keys=True) for d in docs)


def render(target):
    """(docs, how): kubectl's rendering when kubectl exists (checked against the stand-in),
    else the stand-in's."""
    fallback = render_fallback(target)
    if not shutil.which("kubectl"):
        return fallback, "stand-in renderer (no kubectl)"
    docs = render_kubectl(target)
    if canonical(strip_hashes(docs)) != canonical(fallback):
        a, b = set(canonical(strip_hashes(docs))), set(canonical(fallback))
        diff = "\n".join(["kubectl only: " + x[:300] for x in sorted(a - b)]
                         + ["stand-in only: " + x[:300] for x in sorted(b - a)])
        raise RenderError(f"{target}: kubectl kustomize and the stand-in renderer disagree:\n{diff}")
    return docs, "kubectl kustomize (the stand-in agrees)"


# ---------------------------------------------------------------------------------------
# Helpers


def pod_spec(d):
    if d["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return d["spec"]["template"]["spec"]
    return None


def containers(d):
    spec = pod_spec(d)
    if spec is None:
        return []
    return spec.get("containers", []) + spec.get("initContainers", [])


def name(d):
    return f"{d['kind']}/{d['metadata']['name']}"


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def find(docs, kind, nm=None):
    return [d for d in docs if d["kind"] == kind and (nm is None or d["metadata"]["name"] == nm)]


# ---------------------------------------------------------------------------------------
# 1. Schemas


def check_schemas(docs, errors):
    unchecked_cel = 0
    for d in docs:
        key = (d.get("apiVersion"), d.get("kind"))
        if key in CRD_SCHEMAS:
            schema = json.loads((SCHEMAS / CRD_SCHEMAS[key]).read_text())
            v = jsonschema.Draft202012Validator(schema)
            for e in sorted(v.iter_errors(d), key=lambda e: list(e.absolute_path)):
                path = ".".join(str(p) for p in e.absolute_path)
                errors.append(f"{name(d)}: {path}: {e.message}")
            if d["kind"] == "InferencePool":
                check_inferencepool_cel(d, errors)
            else:
                unchecked_cel += json.dumps(schema).count('"rule"')
            continue
        for version in K8S_VERSIONS:
            try:
                kv.validate(d, version, strict=True)
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                errors.append(f"{name(d)}: Kubernetes {version}: {path}: {e.message}")
            except kv.SchemaNotFoundError:
                errors.append(f"{name(d)}: no schema for {key[0]} {key[1]} in Kubernetes {version}")
    return unchecked_cel


def check_inferencepool_cel(d, errors):
    """The CEL rules of the InferencePool CRD (v1.5.0), which jsonschema cannot run."""
    spec = d.get("spec", {})
    ports = [p.get("number") for p in spec.get("targetPorts", [])]
    if len(ports) != len(set(ports)):  # self.all(p1, self.exists_one(p2, p1.number==p2.number))
        errors.append(f"{name(d)}: spec.targetPorts: port number must be unique")
    ref = spec.get("endpointPickerRef", {})
    if ref.get("kind", "Service") == "Service" and "port" not in ref:  # self.kind != 'Service' || has(self.port)
        errors.append(f"{name(d)}: spec.endpointPickerRef: port is required when kind is 'Service'")


# ---------------------------------------------------------------------------------------
# 2. The endpoint picker's configuration


def check_epp_config(docs, metrics, errors):
    maps = [d for d in docs if d["kind"] == "ConfigMap" and EPP_CONFIG_KEY in d.get("data", {})]
    if len(maps) != 1:
        errors.append(f"expected one ConfigMap with {EPP_CONFIG_KEY}, found {len(maps)}")
        return
    where = f"{name(maps[0])}: {EPP_CONFIG_KEY}"
    cfg = yaml.safe_load(maps[0]["data"][EPP_CONFIG_KEY])
    schema = json.loads((SCHEMAS / "endpointpickerconfig-v1alpha1.json").read_text())
    schema_errors = list(jsonschema.Draft202012Validator(schema).iter_errors(cfg))
    for e in schema_errors:
        errors.append(f"{where}: {'.'.join(str(p) for p in e.absolute_path)}: {e.message}")
    if schema_errors:
        return
    # As the EPP's loader: a plugin's name defaults to its type, names are unique, and
    # every reference names a plugin.
    plugins = {}
    for p in cfg["plugins"]:
        n = p.get("name", p["type"])
        if n in plugins:
            errors.append(f"{where}: duplicate plugin name {n!r}")
        plugins[n] = p
    refs = [pl["pluginRef"] for prof in cfg.get("schedulingProfiles", []) for pl in prof["plugins"]]
    refs += [s["pluginRef"] for s in cfg.get("dataLayer", {}).get("sources", [])]
    refs += [x["pluginRef"] for s in cfg.get("dataLayer", {}).get("sources", []) for x in s.get("extractors", [])]
    refs += [cfg[k]["pluginRef"] for k in ("saturationDetector", "parser") if k in cfg]
    for r in refs:
        if r not in plugins:
            errors.append(f"{where}: reference to undefined plugin {r!r}")
    extractors = [p for p in cfg["plugins"] if p["type"] == "core-metrics-extractor"]
    if not extractors:
        errors.append(f"{where}: no core-metrics-extractor: the picker would read vLLM's metric names")
    for ex in extractors:
        params = ex.get("parameters", {})
        engines = {e["name"]: e for e in params.get("engineConfigs", [])}
        default = params.get("defaultEngine", "vllm")
        if default not in engines:
            errors.append(f"{where}: defaultEngine {default!r} has no engineConfigs entry")
        hearth_engine = engines.get("hearth")
        if hearth_engine is None:
            errors.append(f"{where}: no engineConfigs entry named 'hearth'")
            continue
        for field in ("queuedRequestsSpec", "runningRequestsSpec", "kvUsageSpec",
                      "cacheBlockSizeSpec", "cacheNumBlocksSpec"):
            spec = hearth_engine.get(field, "")
            family = spec.split("{")[0].strip()
            if not family:
                errors.append(f"{where}: engine hearth: {field} is empty")
            elif family not in metrics:
                errors.append(f"{where}: engine hearth: {field}: Hearth exports no metric {family!r}")
        # Labels must point the pods at this engine (or they get the default one).
        label_key = params.get("engineLabelKey", "inference.networking.k8s.io/engine-type")
        for dep in find(docs, "Deployment"):
            labels = dep["spec"]["template"]["metadata"].get("labels", {})
            if matches(HEARTH_POD, labels) and labels.get(label_key, default) not in engines:
                errors.append(f"{name(dep)}: label {label_key}={labels.get(label_key)!r} names no engine")


# ---------------------------------------------------------------------------------------
# 3. What schemas cannot see


def check_references(docs, metrics, complete, hearth_flags, errors):
    hearth_deps = [d for d in find(docs, "Deployment")
                   if matches(HEARTH_POD, d["spec"]["template"]["metadata"].get("labels", {}))]
    if len(hearth_deps) != 1:
        errors.append(f"expected one Deployment of Hearth pods ({HEARTH_POD}), found {len(hearth_deps)}")
        return
    dep = hearth_deps[0]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in find(docs, "ConfigMap")}

    for d in docs:
        tmpl = d.get("spec", {}).get("template", {}) if d["kind"] in ("Deployment", "Job") else None
        if d["kind"] == "Deployment":
            sel = d["spec"]["selector"].get("matchLabels", {})
            if not matches(sel, tmpl["metadata"].get("labels", {})):
                errors.append(f"{name(d)}: spec.selector does not select its own pod template")
        if tmpl is not None:
            spec = tmpl["spec"]
            for vol in spec.get("volumes", []):
                cm = vol.get("configMap", {}).get("name")
                if cm is not None and cm not in configmaps:
                    errors.append(f"{name(d)}: volume {vol['name']}: no ConfigMap {cm!r}")
                pvc = vol.get("persistentVolumeClaim", {}).get("claimName")
                if complete and pvc is not None and not find(docs, "PersistentVolumeClaim", pvc):
                    errors.append(f"{name(d)}: volume {vol['name']}: no PersistentVolumeClaim {pvc!r}")
            sa = spec.get("serviceAccountName")
            if sa and not find(docs, "ServiceAccount", sa):
                errors.append(f"{name(d)}: no ServiceAccount {sa!r}")
            for c in spec["containers"]:
                for ef in c.get("envFrom", []):
                    cm = ef.get("configMapRef", {}).get("name")
                    if cm is not None and cm not in configmaps:
                        errors.append(f"{name(d)}: container {c['name']}: no ConfigMap {cm!r}")
                for m in c.get("volumeMounts", []):
                    if m["name"] not in {v["name"] for v in spec.get("volumes", [])}:
                        errors.append(f"{name(d)}: container {c['name']}: no volume {m['name']!r}")

    # Everything that should reach the Hearth pods selects them.
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        for d in find(docs, kind, "hearth"):
            sel = (d["spec"].get("selector") if kind == "Service" else
                   d["spec"].get("podSelector", d["spec"].get("selector", {})).get("matchLabels"))
            if kind == "PodDisruptionBudget":
                sel = d["spec"]["selector"]["matchLabels"]
            if not matches(sel, pod_labels):
                errors.append(f"{name(d)}: its selector does not select the Hearth pods")
    hearth_ports = {p["containerPort"] for c in dep["spec"]["template"]["spec"]["containers"]
                    for p in c.get("ports", [])}
    for pool in find(docs, "InferencePool"):
        if not matches(pool["spec"]["selector"]["matchLabels"], pod_labels):
            errors.append(f"{name(pool)}: spec.selector does not select the Hearth pods")
        for p in pool["spec"]["targetPorts"]:
            if p["number"] not in hearth_ports:
                errors.append(f"{name(pool)}: targetPort {p['number']} is no port of the Hearth container")
        ref = pool["spec"]["endpointPickerRef"]
        svcs = find(docs, "Service", ref["name"])
        if not svcs:
            errors.append(f"{name(pool)}: endpointPickerRef: no Service {ref['name']!r}")
        elif ref["port"]["number"] not in {p["port"] for p in svcs[0]["spec"]["ports"]}:
            errors.append(f"{name(pool)}: endpointPickerRef: Service {ref['name']!r} has no port {ref['port']['number']}")
        else:
            selected = [d for d in find(docs, "Deployment")
                        if matches(svcs[0]["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
            if not selected:
                errors.append(f"{name(svcs[0])}: selects no pods (the endpoint picker's)")
    for route in find(docs, "HTTPRoute"):
        for rule in route["spec"].get("rules", []):
            for b in rule.get("backendRefs", []):
                if b.get("kind") == "InferencePool" and not find(docs, "InferencePool", b["name"]):
                    errors.append(f"{name(route)}: backendRef to no InferencePool {b['name']!r}")
    for hpa in find(docs, "HorizontalPodAutoscaler"):
        t = hpa["spec"]["scaleTargetRef"]
        if not find(docs, t["kind"], t["name"]):
            errors.append(f"{name(hpa)}: scaleTargetRef: no {t['kind']} {t['name']!r}")
        for m in hpa["spec"].get("metrics", []):
            if m["type"] == "Pods" and m["pods"]["metric"]["name"] not in metrics:
                errors.append(f"{name(hpa)}: Hearth exports no metric {m['pods']['metric']['name']!r}")

    check_replica(dep, configmaps, hearth_flags, errors)


def check_replica(dep, configmaps, hearth_flags, errors):
    """The Hearth pods' hardening, probes, drain and resources."""
    where = name(dep)
    spec = dep["spec"]["template"]["spec"]
    c = spec["containers"][0]
    psc, csc = spec.get("securityContext", {}), c.get("securityContext", {})
    want = [
        (psc.get("runAsNonRoot") or csc.get("runAsNonRoot"), "runAsNonRoot"),
        (isinstance(psc.get("runAsUser", csc.get("runAsUser")), int)
         and psc.get("runAsUser", csc.get("runAsUser")) > 0, "a numeric non-zero runAsUser"),
        (csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem"),
        (csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation: false"),
        (csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities drop ALL"),
        ((csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
         "seccompProfile RuntimeDefault"),
        (all(m.get("readOnly") for m in c.get("volumeMounts", [])), "read-only volume mounts"),
    ]
    for ok, what in want:
        if not ok:
            errors.append(f"{where}: the Hearth container lacks {what}")
    args = c.get("args", [])
    if args[:1] != ["serve"]:
        errors.append(f"{where}: the Hearth container does not run `hearth serve`")
    for flag in ("--sealed", "--host=0.0.0.0"):
        if flag not in args:
            errors.append(f"{where}: `hearth serve` lacks {flag}")
    env_names = {e["name"] for e in c.get("env", [])}
    for ef in c.get("envFrom", []):
        env_names |= set(configmaps.get(ef.get("configMapRef", {}).get("name"), {}))
    env_values = {}
    for ef in c.get("envFrom", []):
        env_values.update(configmaps.get(ef.get("configMapRef", {}).get("name"), {}))
    for a in args:
        for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
            if var not in env_names:
                errors.append(f"{where}: argument {a!r}: $({var}) is not in the container's environment")
    if hearth_flags is not None:
        for a in args[1:]:
            if a.startswith("--") and a.split("=")[0] not in hearth_flags:
                errors.append(f"{where}: `hearth serve` has no flag {a.split('=')[0]}")

    def probe_path(p):
        return (c.get(p) or {}).get("httpGet", {}).get("path")
    if probe_path("readinessProbe") != "/health":
        errors.append(f"{where}: the readiness probe must ask /health (503 while loading and draining)")
    if probe_path("startupProbe") != "/health":
        errors.append(f"{where}: the startup probe must ask /health (a model can take minutes to load)")
    if probe_path("livenessProbe") in (None, "/health"):
        errors.append(f"{where}: the liveness probe must not ask /health (it is 503 while draining)")
    pause = (c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}) or {}).get("seconds", 0)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace < max(30, pause + DRAIN_S + GRACE_SLACK_S):
        errors.append(f"{where}: terminationGracePeriodSeconds {grace} < preStop {pause} s + drain {DRAIN_S} s"
                      f" + {GRACE_SLACK_S} s")
    res = c.get("resources", {})
    req, lim = res.get("requests", {}), res.get("limits", {})
    if not req.get("memory") or req.get("memory") != lim.get("memory"):
        errors.append(f"{where}: memory request and limit must be set and equal (resources.py sizes them)")
    threads = env_values.get("HEARTH_THREADS")
    if threads is not None and str(req.get("cpu")) != str(threads):
        errors.append(f"{where}: CPU request {req.get('cpu')} differs from HEARTH_THREADS={threads}")


# ---------------------------------------------------------------------------------------


def check(docs, metrics, complete, hearth_flags):
    errors = []
    unchecked = check_schemas(docs, errors)
    check_epp_config(docs, metrics, errors)
    # The cross-checks read the documents' shape, which only valid documents have.
    if not errors:
        check_references(docs, metrics, complete, hearth_flags, errors)
    return errors, unchecked


def serve_flags(binary):
    out = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", out))


def self_test(docs, metrics, hearth_flags):
    """Each breakage must be caught; returns the ones that were not."""
    def dep(ds):
        return find(ds, "Deployment", "hearth")[0]

    def hearth(ds):
        return dep(ds)["spec"]["template"]["spec"]["containers"][0]

    def epp_cfg(ds, edit):
        cm = [d for d in ds if d["kind"] == "ConfigMap" and EPP_CONFIG_KEY in d.get("data", {})][0]
        cfg = yaml.safe_load(cm["data"][EPP_CONFIG_KEY])
        edit(cfg)
        cm["data"][EPP_CONFIG_KEY] = yaml.safe_dump(cfg)

    def engine(cfg):
        return [p for p in cfg["plugins"] if p["type"] == "core-metrics-extractor"][0]["parameters"]["engineConfigs"][0]

    breakages = {
        "replicas as a string (Kubernetes schema)":
            lambda ds: dep(ds)["spec"].__setitem__("replicas", "three"),
        "a misspelt container field (strict Kubernetes schema)":
            lambda ds: hearth(ds).__setitem__("readinessProbes", hearth(ds)["readinessProbe"]),
        "an InferencePool without targetPorts (CRD schema)":
            lambda ds: find(ds, "InferencePool")[0]["spec"].pop("targetPorts"),
        "an InferencePool with a port twice (CRD CEL rule)":
            lambda ds: find(ds, "InferencePool")[0]["spec"]["targetPorts"].append({"number": 8080}),
        "an HTTPRoute path match of an unknown type (CRD schema)":
            lambda ds: find(ds, "HTTPRoute")[0]["spec"]["rules"][0]["matches"][0]["path"].__setitem__("type", "Glob"),
        "a metric Hearth does not export (EPP config vs metrics.rs)":
            lambda ds: epp_cfg(ds, lambda c: engine(c).__setitem__("kvUsageSpec", "vllm:kv_cache_usage_perc")),
        "a misspelt engineConfigs key (EPP config schema)":
            lambda ds: epp_cfg(ds, lambda c: engine(c).__setitem__("queuedRequestSpec", "x")),
        "a profile naming an undefined plugin (EPP config references)":
            lambda ds: epp_cfg(ds, lambda c: c["schedulingProfiles"][0]["plugins"].append({"pluginRef": "lora-affinity-scorer"})),
        "an InferencePool selecting no Hearth pod":
            lambda ds: find(ds, "InferencePool")[0]["spec"]["selector"]["matchLabels"].__setitem__("app.kubernetes.io/name", "vllm"),
        "a Service selecting no Hearth pod":
            lambda ds: find(ds, "Service", "hearth")[0]["spec"]["selector"].__setitem__("app.kubernetes.io/component", "x"),
        "the seal left off":
            lambda ds: hearth(ds)["args"].remove("--sealed"),
        "a writable root filesystem":
            lambda ds: hearth(ds)["securityContext"].__setitem__("readOnlyRootFilesystem", False),
        "a grace period shorter than the drain":
            lambda ds: dep(ds)["spec"]["template"]["spec"].__setitem__("terminationGracePeriodSeconds", 20),
        "liveness on /health":
            lambda ds: hearth(ds)["livenessProbe"]["httpGet"].__setitem__("path", "/health"),
        "an autoscaler on a metric Hearth does not export":
            lambda ds: find(ds, "HorizontalPodAutoscaler")[0]["spec"]["metrics"][0]["pods"]["metric"].__setitem__("name", "vllm:num_requests_waiting"),
        "an argument naming an undefined variable":
            lambda ds: hearth(ds)["args"].append("--queue=$(HEARTH_QUEUE)"),
        "a kind with no schema":
            lambda ds: ds.append({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}}),
    }
    if hearth_flags is not None:
        breakages["a flag hearth serve does not have"] = lambda ds: hearth(ds)["args"].append("--turbo")
    missed = []
    for what, breakage in breakages.items():
        broken = copy.deepcopy(docs)
        breakage(broken)
        errors, _ = check(broken, metrics, True, hearth_flags)
        status = "caught" if errors else "MISSED"
        print(f"  self-test: {what}: {status}" + (f" ({errors[0][:140]})" if errors else ""))
        if not errors:
            missed.append(what)
    return missed, len(breakages)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="*", default=["base", "example"],
                    help="Kustomize folders, relative to deploy/kubernetes (default: base example)")
    ap.add_argument("--hearth", help="a hearth binary: check every flag passed to `hearth serve` exists")
    ap.add_argument("--self-test", action="store_true", help="also break the example and expect failures")
    args = ap.parse_args()
    metrics = hearth_metrics()
    hearth_flags = serve_flags(args.hearth) if args.hearth else None
    passed = failed = 0
    example_docs = None
    for t in args.targets:
        target = HERE / t
        try:
            docs, how = render(target)
        except RenderError as e:
            print(f"deploy/kubernetes/{t}: FAILED to render: {e}")
            failed += 1
            continue
        # A target with a Namespace is a whole deployment: everything it refers to must be in it.
        complete = bool(find(docs, "Namespace"))
        errors, unchecked = check(docs, metrics, complete, hearth_flags)
        kinds = sorted({d["kind"] for d in docs})
        if errors:
            failed += 1
            print(f"deploy/kubernetes/{t}: FAILED ({len(docs)} documents, {how})")
            for e in errors:
                print(f"  {e}")
        else:
            passed += 1
            note = f"; {unchecked} CEL rules of the HTTPRoute CRD not evaluated" if unchecked else ""
            print(f"deploy/kubernetes/{t}: ok: {len(docs)} documents ({', '.join(kinds)}), "
                  f"Kubernetes {' and '.join(K8S_VERSIONS)}, {how}{note}")
        if complete:
            example_docs = docs
    if args.self_test:
        if example_docs is None:
            print("self-test: no complete target (one with a Namespace) to break")
            failed += 1
        else:
            missed, n = self_test(example_docs, metrics, hearth_flags)
            if missed:
                failed += 1
                print(f"self-test: {len(missed)} of {n} breakages passed validation: {', '.join(missed)}")
            else:
                passed += 1
                print(f"self-test: all {n} breakages caught")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
