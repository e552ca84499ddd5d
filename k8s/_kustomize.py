"""A small, offline subset of ``kustomize build``: enough to render k8s/ in the test suite.

Clusters get the real thing (``kubectl apply -k k8s/overlays/prod``); this exists because the
tests run without a kustomize binary. It implements what k8s/ uses and refuses anything else by
name, so a kustomization that needs more fails here instead of rendering something kustomize
would not:

- ``resources`` (YAML files, or directories holding a kustomization) and ``components``
  (directories whose kustomization has ``kind: Component``), accumulated in kustomize's order:
  resources, then components, then generators, then patches, namespace and labels;
- ``configMapGenerator`` and ``secretGenerator`` with ``files``, ``envs`` and ``literals``, only
  with ``disableNameSuffixHash: true``: a hash suffix needs kustomize's name-reference
  rewriting, which kustomize itself does not do inside KubeRay's pod templates;
- ``patches`` from ``path`` or inline ``patch``: a strategic-merge patch (maps merge, ``null``
  deletes a key, lists whose items all carry ``name`` merge on it as kustomize does for
  containers, env, volumes and volumeMounts; any other list is replaced), or, with a ``target``
  naming ``kind`` and ``name``, a JSON 6902 list of ``add`` / ``replace`` / ``remove``;
- ``namespace`` (set on every resource: k8s/ has no cluster-scoped kinds) and ``labels`` with
  ``pairs`` only (metadata.labels, never selectors or templates).

Known differences: resources come out in input order (kustomize sorts them by kind); a target's
``name`` is matched exactly (kustomize reads it as a regex); directives such as ``$patch`` are
refused rather than interpreted.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import yaml

from k8s.errors import KustomizeError

__all__ = ["build", "strategic_merge", "json_patch"]

Resource = dict[str, Any]

_FILENAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_KEYS = {
    "apiVersion", "kind", "resources", "components", "patches", "namespace", "labels",
    "configMapGenerator", "secretGenerator", "generatorOptions",
}
_GENERATOR_KEYS = {"name", "files", "envs", "literals", "options", "type"}
_TARGET_KEYS = {"kind", "name", "group", "version"}


def build(path: str | Path) -> list[Resource]:
    """Render the kustomization in directory ``path`` into a list of resources."""
    root = Path(path)
    resources = _accumulate(root, component=False, resources=[])
    seen: set[tuple[str, str, str]] = set()
    for r in resources:
        meta = r.get("metadata", {})
        rid = (r.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))
        if rid in seen:
            raise KustomizeError(f"{root}: {rid[0]} {rid[2]!r} is defined twice; "
                                 "kustomize refuses conflicting resource ids")
        seen.add(rid)
    return resources


def _load(root: Path) -> tuple[Path, dict[str, Any]]:
    for name in _FILENAMES:
        file = root / name
        if file.is_file():
            break
    else:
        raise KustomizeError(f"{root}: no kustomization.yaml in this directory")
    data = yaml.safe_load(file.read_text()) or {}
    unsupported = sorted(set(data) - _KEYS)
    if unsupported:
        raise KustomizeError(
            f"{file}: {', '.join(unsupported)} not supported by k8s/_kustomize.py; use the "
            "features its docstring lists, or extend it together with a test")
    return file, data


def _accumulate(root: Path, component: bool, resources: list[Resource]) -> list[Resource]:
    file, k = _load(root)
    kind = k.get("kind", "Kustomization")
    if (kind == "Component") != component:
        want = "Component" if component else "Kustomization"
        raise KustomizeError(f"{file}: kind {kind}, but it is used as a {want}; list components "
                             "under `components:` and kustomizations under `resources:`")
    for entry in k.get("resources", []):
        target = _local(root, entry, file)
        if target.is_dir():
            resources.extend(_accumulate(target, component=False, resources=[]))
        else:
            resources.extend(_read_documents(target))
    for entry in k.get("components", []):
        # A component works on what its parent accumulated: its patches reach those resources.
        _accumulate(_local(root, entry, file), component=True, resources=resources)
    options = k.get("generatorOptions", {})
    for gen in k.get("configMapGenerator", []):
        resources.append(_generate("ConfigMap", root, file, gen, options))
    for gen in k.get("secretGenerator", []):
        resources.append(_generate("Secret", root, file, gen, options))
    for entry in k.get("patches", []):
        _patch(resources, root, file, entry)
    if "namespace" in k:
        for r in resources:
            r.setdefault("metadata", {})["namespace"] = k["namespace"]
    for entry in k.get("labels", []):
        if set(entry) - {"pairs", "includeSelectors", "includeTemplates"} or entry.get(
                "includeSelectors") or entry.get("includeTemplates"):
            raise KustomizeError(f"{file}: labels support `pairs` only (no selectors/templates)")
        for r in resources:
            r.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
    return resources


def _local(root: Path, entry: str, where: Path) -> Path:
    if "://" in entry or entry.startswith("github.com/"):
        raise KustomizeError(f"{where}: remote resource {entry!r} not supported offline")
    target = (root / entry).resolve()
    if not target.exists():
        raise KustomizeError(f"{where}: {entry!r} does not exist (looked for {target})")
    return target


def _read_documents(file: Path) -> list[Resource]:
    docs = [d for d in yaml.safe_load_all(file.read_text()) if d is not None]
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "metadata" not in d:
            raise KustomizeError(f"{file}: every document must be a resource with kind/metadata")
    return docs


def _generate(kind: str, root: Path, where: Path, gen: dict[str, Any],
              options: dict[str, Any]) -> Resource:
    name = gen.get("name", "?")
    unsupported = sorted(set(gen) - _GENERATOR_KEYS) + (["type"] if kind == "ConfigMap"
                                                        and "type" in gen else [])
    if unsupported:
        raise KustomizeError(f"{where}: {kind} generator {name!r}: {', '.join(unsupported)} "
                             "not supported")
    opts = {**options, **gen.get("options", {})}
    if not opts.get("disableNameSuffixHash"):
        raise KustomizeError(
            f"{where}: {kind} generator {name!r} needs `disableNameSuffixHash: true`; "
            "KubeRay pod templates would keep the unsuffixed name")
    data: dict[str, str] = {}

    def put(key: str, value: str) -> None:
        if key in data:
            raise KustomizeError(f"{where}: {kind} {name!r} sets key {key!r} twice")
        data[key] = value

    for literal in gen.get("literals", []):
        key, _, value = literal.partition("=")
        put(key, value)
    for env in gen.get("envs", []):
        for n, line in enumerate(_source(root, env, where, kind, name).splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if "=" not in line:
                raise KustomizeError(f"{root / env}:{n}: expected KEY=VALUE, got {line!r}")
            key, _, value = line.partition("=")
            put(key.strip(), value)
    for entry in gen.get("files", []):
        key, _, path = entry.rpartition("=")
        put(key or Path(path).name, _source(root, path, where, kind, name))
    meta: dict[str, Any] = {"name": name}
    for field in ("labels", "annotations"):
        if opts.get(field):
            meta[field] = dict(opts[field])
    if kind == "ConfigMap":
        return {"apiVersion": "v1", "kind": kind, "metadata": meta, "data": data}
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": kind, "metadata": meta,
            "type": gen.get("type", "Opaque"), "data": encoded}


def _source(root: Path, rel: str, where: Path, kind: str, name: str) -> str:
    path = root / rel
    if not path.is_file():
        hint = ""
        if path.with_name(path.name + ".example").is_file():
            hint = f"; copy {path.name}.example to {path.name} and fill in real values"
        raise KustomizeError(f"{where}: {kind} {name!r} reads {path}, which does not exist{hint}")
    return path.read_text()


def _patch(resources: list[Resource], root: Path, where: Path, entry: dict[str, Any]) -> None:
    if set(entry) - {"path", "patch", "target"} or ("path" in entry) == ("patch" in entry):
        raise KustomizeError(f"{where}: a patch needs exactly one of `path`/`patch`, and "
                             "optionally `target` (no `options`)")
    if "path" in entry:
        file = _local(root, entry["path"], where)
        source, text = str(file), file.read_text()
    else:
        source, text = f"{where} (inline patch)", entry["patch"]
    body = yaml.safe_load(text)
    target = entry.get("target")
    if isinstance(body, list):
        if not target:
            raise KustomizeError(f"{source}: a JSON 6902 patch needs a `target` (kind, name)")
        for r in _select(resources, target, source):
            try:
                json_patch(r, body)
            except KustomizeError as err:
                raise KustomizeError(f"{source}: {err}") from None
    elif isinstance(body, dict):
        if not target:
            target = {"kind": body.get("kind"), "name": body.get("metadata", {}).get("name")}
        for r in _select(resources, target, source):
            merged = strategic_merge(r, body)
            r.clear()
            r.update(merged)
    else:
        raise KustomizeError(f"{source}: a patch is a resource (strategic merge) or a list of "
                             "JSON 6902 operations")


def _select(resources: list[Resource], target: dict[str, Any], source: str) -> list[Resource]:
    if set(target) - _TARGET_KEYS:
        raise KustomizeError(f"{source}: target selects by {sorted(_TARGET_KEYS)} only")
    found = []
    for r in resources:
        group, _, version = r.get("apiVersion", "").rpartition("/")
        if (r.get("kind") == target.get("kind")
                and r.get("metadata", {}).get("name") == target.get("name")
                and target.get("group", group) == group
                and target.get("version", version) == version):
            found.append(r)
    if not found:
        raise KustomizeError(f"{source}: targets {target.get('kind')}/{target.get('name')}, "
                             "which is not among the resources built so far")
    return found


def strategic_merge(base: Any, patch: Any) -> Any:
    """Merge ``patch`` into ``base`` with the strategic-merge rules described above."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if key.startswith("$"):
                raise KustomizeError(f"patch directive {key!r} is not supported")
            if value is None:
                out.pop(key, None)
            else:
                out[key] = strategic_merge(out[key], value) if key in out else copy.deepcopy(
                    value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        out_list = copy.deepcopy(base)
        index = {item["name"]: i for i, item in enumerate(out_list)}
        for item in patch:
            if item["name"] in index:
                out_list[index[item["name"]]] = strategic_merge(out_list[index[item["name"]]],
                                                                item)
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and isinstance(i.get("name"), str)
                               for i in items)


def json_patch(doc: Resource, operations: list[dict[str, Any]]) -> None:
    """Apply RFC 6902 ``add``/``replace``/``remove`` operations to ``doc`` in place."""
    for op in operations:
        kind, path = op.get("op"), op.get("path", "")
        if kind not in ("add", "replace", "remove"):
            raise KustomizeError(f"JSON 6902 op {kind!r} not supported (add, replace, remove)")
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]]
        if not tokens:
            raise KustomizeError(f"JSON 6902 path {path!r} must point inside the resource")
        parent: Any = doc
        for token in tokens[:-1]:
            try:
                parent = parent[int(token)] if isinstance(parent, list) else parent[token]
            except (KeyError, IndexError, ValueError):
                raise KustomizeError(f"JSON 6902 path {path!r}: {token!r} does not exist") from None
        last = tokens[-1]
        if isinstance(parent, list):
            if kind == "add" and last == "-":
                parent.append(copy.deepcopy(op["value"]))
                continue
            i = int(last) if last.isdigit() else -1
            if not 0 <= i < len(parent) + (kind == "add"):
                raise KustomizeError(f"JSON 6902 path {path!r}: index {last!r} out of range")
            if kind == "remove":
                del parent[i]
            elif kind == "add":
                parent.insert(i, copy.deepcopy(op["value"]))
            else:
                parent[i] = copy.deepcopy(op["value"])
        elif isinstance(parent, dict):
            if kind != "add" and last not in parent:
                raise KustomizeError(f"JSON 6902 {kind} {path!r}: {last!r} does not exist")
            if kind == "remove":
                del parent[last]
            else:
                parent[last] = copy.deepcopy(op["value"])
        else:
            raise KustomizeError(f"JSON 6902 path {path!r} goes through a scalar")
