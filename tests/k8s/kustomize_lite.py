"""A small kustomize subset, used by check_k8s.py when `kubectl kustomize` is not available.

Supported kustomization fields (what k8s/ uses; anything else is an error, never ignored):
  resources (files and directories), namespace, labels (pairs, includeSelectors: false),
  images (name, newName, newTag, digest), generatorOptions.disableNameSuffixHash: true,
  configMapGenerator / secretGenerator (files, literals), patches (path or inline patch; a YAML
  list is JSON 6902 and needs a target, a mapping is a strategic merge patch), replacements
  (source kind/name/fieldPath, targets select kind/name and fieldPaths; a path segment is a key, a
  list index or [key=value]; a scalar target keeps its type, as kustomize v5 does; run after the
  patches).

Strategic merge follows Kubernetes for built-in kinds where it matters here (lists of mappings
with a `name` merge by name; other lists are replaced; null deletes) and JSON merge patch for
custom resources (lists replaced), as kustomize does.
"""

import base64
import copy
import os

import yaml

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED = {
    "apiVersion", "kind", "resources", "namespace", "labels", "images", "generatorOptions",
    "configMapGenerator", "secretGenerator", "patches", "replacements",
}
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PersistentVolume", "StorageClass", "PriorityClass", "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}
BUILTIN_GROUPS = {"v1", "apps/v1", "batch/v1", "policy/v1", "rbac.authorization.k8s.io/v1",
                  "networking.k8s.io/v1", "autoscaling/v2", "scheduling.k8s.io/v1"}


class KustomizeError(Exception):
    pass


def _load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _find_kustomization(directory):
    for n in KUSTOMIZATION_NAMES:
        p = os.path.join(directory, n)
        if os.path.isfile(p):
            return p
    raise KustomizeError(f"{directory}: no kustomization.yaml")


def _key(doc):
    md = doc.get("metadata", {})
    return (doc.get("kind"), md.get("namespace"), md.get("name"))


def _generate(gen, kind, base_dir):
    name = gen.get("name")
    if not name:
        raise KustomizeError(f"{kind} generator without a name")
    unknown = set(gen) - {"name", "files", "literals", "namespace"}
    if unknown:
        raise KustomizeError(f"{kind} generator {name}: unsupported fields {sorted(unknown)}")
    data = {}
    for spec in gen.get("files", []):
        key, _, rel = spec.partition("=") if "=" in spec else (os.path.basename(spec), "", spec)
        full = os.path.join(base_dir, rel)
        if not os.path.isfile(full):
            raise KustomizeError(f"{kind} {name}: file {rel} not found in {base_dir}")
        with open(full, "rb") as f:
            data[key] = f.read()
    for spec in gen.get("literals", []):
        key, _, value = spec.partition("=")
        data[key] = value.encode()
    doc = {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}
    if kind == "Secret":
        doc["type"] = "Opaque"
        doc["data"] = {k: base64.b64encode(v).decode() for k, v in data.items()}
    else:
        doc["data"] = {k: v.decode() for k, v in data.items()}
    if gen.get("namespace"):
        doc["metadata"]["namespace"] = gen["namespace"]
    return doc


def _smp(target, patch, builtin):
    """Strategic merge (builtin kinds) or JSON merge patch (custom resources)."""
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return copy.deepcopy(patch)
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif k in out and isinstance(v, dict):
            out[k] = _smp(out[k], v, builtin)
        elif (builtin and k in out and isinstance(v, list) and isinstance(out[k], list)
              and all(isinstance(e, dict) and "name" in e for e in v + out[k])):
            merged = [copy.deepcopy(e) for e in out[k]]
            index = {e["name"]: i for i, e in enumerate(merged)}
            for e in v:
                if e["name"] in index:
                    merged[index[e["name"]]] = _smp(merged[index[e["name"]]], e, builtin)
                else:
                    merged.append(copy.deepcopy(e))
            out[k] = merged
        else:
            out[k] = copy.deepcopy(v)
    return out


def _pointer(path):
    if not path.startswith("/"):
        raise KustomizeError(f"JSON pointer must start with '/': {path}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _json6902(doc, ops):
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = _pointer(op["path"])
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        kind = op["op"]
        try:
            if isinstance(parent, list):
                idx = len(parent) if last == "-" else int(last)
                if kind == "add":
                    parent.insert(idx, copy.deepcopy(op["value"]))
                elif kind == "replace":
                    parent[idx] = copy.deepcopy(op["value"])
                elif kind == "remove":
                    del parent[idx]
                elif kind == "test":
                    if parent[idx] != op["value"]:
                        raise KustomizeError(f"test failed at {op['path']}: {parent[idx]!r}")
                else:
                    raise KustomizeError(f"unsupported JSON patch op {kind}")
            else:
                if kind in ("replace", "remove", "test") and last not in parent:
                    raise KustomizeError(f"{kind} {op['path']}: no such path")
                if kind in ("add", "replace"):
                    parent[last] = copy.deepcopy(op["value"])
                elif kind == "remove":
                    del parent[last]
                elif kind == "test":
                    if parent[last] != op["value"]:
                        raise KustomizeError(f"test failed at {op['path']}: {parent[last]!r}")
                else:
                    raise KustomizeError(f"unsupported JSON patch op {kind}")
        except (IndexError, KeyError, ValueError, TypeError) as e:
            raise KustomizeError(f"JSON patch {kind} {op['path']}: {e}") from e
    return doc


def _matches(doc, target):
    api = doc.get("apiVersion", "")
    group, _, version = api.rpartition("/")
    checks = {"kind": doc.get("kind"), "name": doc.get("metadata", {}).get("name"),
              "namespace": doc.get("metadata", {}).get("namespace"), "group": group,
              "version": version}
    unknown = set(target) - set(checks)
    if unknown:
        raise KustomizeError(f"patch target: unsupported fields {sorted(unknown)}")
    return all(checks[k] == v for k, v in target.items())


def _field_path(node, path, what):
    """(parent, key) of the field at a kustomize fieldPath (a.b.[name=x].c, a.0.b)."""
    segments = []
    for part in path.split("."):
        segments.append(part)
    # "[name=x]" may hold dots in its value: rejoin what split inside brackets.
    merged = []
    for seg in segments:
        if merged and merged[-1].startswith("[") and not merged[-1].endswith("]"):
            merged[-1] += "." + seg
        else:
            merged.append(seg)
    parent, key = None, None
    cur = node
    for seg in merged:
        if seg.startswith("[") and seg.endswith("]"):
            k, _, v = seg[1:-1].partition("=")
            if not isinstance(cur, list):
                raise KustomizeError(f"{what}: {path}: {seg} needs a list")
            hits = [i for i, e in enumerate(cur) if isinstance(e, dict) and str(e.get(k)) == v]
            if len(hits) != 1:
                raise KustomizeError(f"{what}: {path}: {len(hits)} elements match {seg}")
            parent, key = cur, hits[0]
        elif isinstance(cur, list):
            if not seg.isdigit() or int(seg) >= len(cur):
                raise KustomizeError(f"{what}: {path}: no element {seg}")
            parent, key = cur, int(seg)
        elif isinstance(cur, dict) and seg in cur:
            parent, key = cur, seg
        else:
            raise KustomizeError(f"{what}: {path}: no field {seg}")
        cur = parent[key]
    return parent, key


def _replace(docs, rules, what):
    for rule in rules:
        src = rule.get("source", {})
        unknown = set(src) - {"kind", "name", "fieldPath"}
        if unknown or "path" in rule:
            raise KustomizeError(f"{what}: replacements: unsupported fields {sorted(unknown)}")
        sel = {k: src[k] for k in ("kind", "name") if k in src}
        hits = [d for d in docs if _matches(d, sel)]
        if len(hits) != 1:
            raise KustomizeError(f"{what}: replacements source {sel} matches {len(hits)} resources")
        parent, key = _field_path(hits[0], src["fieldPath"], what)
        value = parent[key]
        for t in rule.get("targets", []):
            unknown = set(t) - {"select", "fieldPaths"}
            if unknown:
                raise KustomizeError(f"{what}: replacements target: unsupported {sorted(unknown)}")
            targets = [d for d in docs if _matches(d, t["select"])]
            if not targets:
                raise KustomizeError(f"{what}: replacements target {t['select']} matches nothing")
            for d in targets:
                for fp in t["fieldPaths"]:
                    tp, tk = _field_path(d, fp, what)
                    old = tp[tk]
                    if isinstance(old, str) and not isinstance(value, str):
                        tp[tk] = str(value)
                    elif isinstance(old, int) and isinstance(value, str) and value.isdigit():
                        tp[tk] = int(value)
                    else:
                        tp[tk] = copy.deepcopy(value)


def _walk_containers(node, fn):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("containers", "initContainers") and isinstance(v, list):
                for c in v:
                    fn(c)
            else:
                _walk_containers(v, fn)
    elif isinstance(node, list):
        for v in node:
            _walk_containers(v, fn)


def _set_image(container, rule):
    image = container.get("image", "")
    name = image.split("@")[0]
    last = name.rsplit("/", 1)[-1]
    name = name[: len(name) - len(last)] + last.split(":")[0]
    if name != rule["name"]:
        return
    unknown = set(rule) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise KustomizeError(f"images: unsupported fields {sorted(unknown)}")
    new = rule.get("newName", name)
    if "digest" in rule:
        new += "@" + rule["digest"]
    elif "newTag" in rule:
        new += ":" + str(rule["newTag"])
    else:
        new = image.replace(name, new, 1)
    container["image"] = new


def render(directory):
    """Returns the rendered documents of the kustomization in `directory`."""
    kpath = _find_kustomization(directory)
    with open(kpath) as f:
        k = yaml.safe_load(f) or {}
    unknown = set(k) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{kpath}: fields not supported by the built-in renderer: "
                             f"{sorted(unknown)}")
    docs = []
    for res in k.get("resources", []):
        full = os.path.normpath(os.path.join(directory, res))
        if os.path.isdir(full):
            docs.extend(render(full))
        elif os.path.isfile(full):
            docs.extend(_load_docs(full))
        else:
            raise KustomizeError(f"{kpath}: resource {res} not found")
    opts = k.get("generatorOptions", {})
    if (k.get("configMapGenerator") or k.get("secretGenerator")) and not opts.get(
            "disableNameSuffixHash"):
        raise KustomizeError(f"{kpath}: the built-in renderer needs disableNameSuffixHash: true")
    for gen in k.get("configMapGenerator", []):
        docs.append(_generate(gen, "ConfigMap", directory))
    for gen in k.get("secretGenerator", []):
        docs.append(_generate(gen, "Secret", directory))
    seen = set()
    for d in docs:
        if _key(d) in seen:
            raise KustomizeError(f"{kpath}: duplicate resource {_key(d)}")
        seen.add(_key(d))

    for p in k.get("patches", []):
        if "path" in p:
            patch_docs = _load_docs(os.path.join(directory, p["path"]))
            what = p["path"]
        else:
            patch_docs = [yaml.safe_load(p["patch"])]
            what = "inline patch"
        target = p.get("target")
        for patch in patch_docs:
            if isinstance(patch, list):
                if not target:
                    raise KustomizeError(f"{what}: a JSON 6902 patch needs a target")
                hits = [i for i, d in enumerate(docs) if _matches(d, target)]
                if not hits:
                    raise KustomizeError(f"{what}: no resource matches target {target}")
                for i in hits:
                    docs[i] = _json6902(docs[i], patch)
            else:
                sel = target or {"kind": patch.get("kind"),
                                 "name": patch.get("metadata", {}).get("name")}
                hits = [i for i, d in enumerate(docs) if _matches(d, sel)]
                if not hits:
                    raise KustomizeError(f"{what}: no resource matches {sel}")
                for i in hits:
                    builtin = docs[i].get("apiVersion") in BUILTIN_GROUPS
                    docs[i] = _smp(docs[i], patch, builtin)

    _replace(docs, k.get("replacements", []), kpath)

    ns = k.get("namespace")
    if ns:
        for d in docs:
            if d.get("kind") not in CLUSTER_SCOPED:
                d.setdefault("metadata", {})["namespace"] = ns
    for entry in k.get("labels", []):
        if entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise KustomizeError(f"{kpath}: labels with includeSelectors/includeTemplates are "
                                 "not supported by the built-in renderer")
        for d in docs:
            d.setdefault("metadata", {}).setdefault("labels", {}).update(entry.get("pairs", {}))
    for rule in k.get("images", []):
        for d in docs:
            _walk_containers(d, lambda c, r=rule: _set_image(c, r))
    return docs
