"""Offline checks of deploy/: what scripts/check-deploy.sh runs in its venv.

Kubernetes manifests are validated against the Kubernetes JSON schemas bundled in the
kubernetes-validate package (strict: unknown fields fail; an apiVersion/kind it has no schema
for fails too), except the snapshot CRD kinds, which are validated against the CRD schemas
vendored in deploy/schemas/ (made strict the same way). The Nomad files are parsed with
python-hcl2 and their essentials checked. Then the files are checked against each other:
plugin name, socket paths, Services, Secrets, RBAC subjects, classes, images, Polly's config
and CreateVolume parameters. Exit status 1 on any problem, each printed on one line.

Usage: python3 scripts/check_deploy.py [REPO_ROOT]   (env POLLY_K8S_VERSION, default 1.35.0)
"""

import copy
import json
import os
import re
import sys
import textwrap
import tomllib
from pathlib import Path

import hcl2
import jsonschema
import kubernetes_validate
import referencing
import yaml
from hcl2.utils import SerializationOptions
from kubernetes_validate.utils import SchemaNotFoundError

PLUGIN = "csi.polly.io"
NOMAD_PLUGIN = "polly"
ZONE_KEY = "topology.polly.io/zone"
K8S_VERSION = os.environ.get("POLLY_K8S_VERSION", "1.35.0")
DEFINITIONS = "https://kubernetes.io/api/_definitions.json"
# Kinds kubernetes-validate has no schema for, and the vendored CRD schema for each.
CRD_SCHEMAS = {
    ("snapshot.storage.k8s.io/v1", "VolumeSnapshotClass"): "volumesnapshotclass-snapshot-v1.json",
    ("snapshot.storage.k8s.io/v1", "VolumeSnapshot"): "volumesnapshot-snapshot-v1.json",
}
POD_OWNERS = {"Deployment", "DaemonSet", "StatefulSet", "Pod"}
SIDECAR_REGISTRY = "registry.k8s.io/sig-storage/"
# An image built from this repository: the one image allowed to carry a placeholder tag.
POLLY_IMAGE = re.compile(r"^polly(:[\w.-]+)?$")

problems = []


def problem(where, msg):
    problems.append(f"{where}: {msg}")


# ---------------------------------------------------------------- Kubernetes: schemas


def strict(schema):
    """A copy of a CRD schema in which objects with properties refuse unknown fields."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return schema


def crd_validator(path):
    """A Draft 2020-12 validator for a vendored CRD schema, metadata checked as ObjectMeta."""
    schema = strict(json.loads(path.read_text()))
    schema["properties"]["metadata"] = {
        "$ref": DEFINITIONS + "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    }
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    major_minor = ".".join(K8S_VERSION.split(".")[:2])
    defs_dir = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    defs = json.loads((defs_dir / f"v{major_minor}.0-local-strict" / "_definitions.json").read_text())
    registry = referencing.Registry().with_resource(DEFINITIONS, referencing.Resource.from_contents(defs))
    return jsonschema.Draft202012Validator(schema, registry=registry)


def load_manifests(root):
    """Every YAML document under deploy/kubernetes, as (file, index, object)."""
    docs = []
    for f in sorted((root / "deploy/kubernetes").rglob("*.yaml")):
        rel = f.relative_to(root)
        try:
            loaded = list(yaml.safe_load_all(f.read_text()))
        except yaml.YAMLError as e:
            problem(rel, f"not YAML: {e}")
            continue
        for i, d in enumerate(x for x in loaded if x is not None):
            if not isinstance(d, dict):
                problem(f"{rel}#{i}", "a document that is not a mapping")
                continue
            docs.append((rel, i, d))
    return docs


def validate_schemas(root, docs):
    validators = {k: crd_validator(root / "deploy/schemas" / v) for k, v in CRD_SCHEMAS.items()}
    counts = {"k8s": 0, "crd": 0}
    for rel, i, d in docs:
        where = f"{rel}#{i} {d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
        if not all(isinstance(d.get(k), str) for k in ("apiVersion", "kind")):
            problem(where, "apiVersion and kind must be strings")
            continue
        key = (d["apiVersion"], d["kind"])
        if key in validators:
            errors = sorted(validators[key].iter_errors(d), key=lambda e: list(e.path))
            for e in errors:
                path = ".".join(str(p) for p in e.path)
                problem(where, f"CRD schema: {path}: {e.message}")
            counts["crd"] += 1
            continue
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
            counts["k8s"] += 1
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problem(where, f"Kubernetes {e.version} schema: {path}: {e.message}")
        except SchemaNotFoundError as e:
            problem(where, f"no schema: {e.message}")
    return counts


# ---------------------------------------------------------------- Kubernetes: consistency


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def name_of(d):
    return d.get("metadata", {}).get("name")


def ns_of(d):
    return d.get("metadata", {}).get("namespace", "default")


def pod_spec(d):
    return d["spec"] if d["kind"] == "Pod" else d["spec"]["template"]["spec"]


def flags(container):
    """--key=value arguments (and bare --key) of a container, as a dict."""
    out = {}
    for a in container.get("args", []) + container.get("command", [])[1:]:
        if isinstance(a, str) and a.startswith("-"):
            k, _, v = a.lstrip("-").partition("=")
            out[k] = v
    return out


def resolve(spec, container, path):
    """(volume, path inside it) of a container path, from its volumeMounts."""
    best = None
    for m in container.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best[1]):
                best = (m["name"], mp)
    if best is None:
        return None
    vol = next((v for v in spec.get("volumes", []) if v["name"] == best[0]), None)
    return vol, path[len(best[1]) :].lstrip("/")


def same_file(spec, a, pa, b, pb):
    ra, rb = resolve(spec, a, pa), resolve(spec, b, pb)
    return ra is not None and rb is not None and ra[0] is not None and ra == rb


def containers(docs):
    for d in docs:
        if d.get("kind") in POD_OWNERS:
            for c in pod_spec(d).get("containers", []) + pod_spec(d).get("initContainers", []):
                yield d, c


def polly_toml(docs, where):
    for cm in by_kind(docs, "ConfigMap"):
        if "polly.toml" in cm.get("data", {}):
            try:
                return cm, tomllib.loads(cm["data"]["polly.toml"])
            except tomllib.TOMLDecodeError as e:
                problem(where, f"ConfigMap {name_of(cm)} polly.toml is not TOML: {e}")
                return cm, None
    problem(where, "no ConfigMap with polly.toml")
    return None, None


def check_parameters(where, params, services):
    for k, v in (params or {}).items():
        if k.startswith("csi.storage.k8s.io/"):
            continue
        if k in ("service", "pool", "fsType") or re.fullmatch(r"labels?\.[^.].*", k):
            if k == "service" and services is not None and v not in services:
                problem(where, f"parameter service={v!r}: not a service of Polly's config {sorted(services)}")
            continue
        problem(where, f"parameter {k!r}: Polly refuses it (service, pool, labels.*, label.*, fsType, csi.storage.k8s.io/*)")


def check_images(docs):
    for d, c in containers(docs):
        where = f"{d['kind']}/{name_of(d)} container {c['name']}"
        image = c.get("image", "")
        if POLLY_IMAGE.match(image):
            continue
        repo, _, tag = image.rpartition(":")
        if not repo or "/" in tag or tag in ("", "latest"):
            problem(where, f"image {image!r} is not pinned to a release tag")
        elif image.startswith(SIDECAR_REGISTRY) and not re.fullmatch(r"v\d+\.\d+\.\d+", tag):
            problem(where, f"sidecar image {image!r}: expected a vX.Y.Z release tag")


def check_controller(docs, services, toml_cfg):
    where = "controller"
    polly = [(d, c) for d, c in containers(docs) if POLLY_IMAGE.match(c.get("image", "")) and c.get("args", [None])[0] == "serve"]
    if len(polly) != 1:
        problem(where, f"expected one container running `polly serve`, found {len(polly)}")
        return
    d, server = polly[0]
    spec = pod_spec(d)
    where = f"{d['kind']}/{name_of(d)}"
    if d["kind"] != "Pod" and d["spec"].get("replicas", 1) != 1:
        problem(where, "central Polly (sled store) must run as one replica")
    if d["kind"] == "Deployment" and d["spec"].get("strategy", {}).get("type") != "Recreate":
        problem(where, "strategy must be Recreate: two pods on one sled store at once fail")
    listen = ((toml_cfg or {}).get("csi") or {}).get("listen", "")
    if not listen.startswith("unix://"):
        problem(where, f"[csi] listen {listen!r}: the sidecars need a unix socket")
        return
    sock = listen[len("unix://") :]
    if resolve(spec, server, sock) is None or "emptyDir" not in resolve(spec, server, sock)[0]:
        problem(where, f"polly's CSI socket {sock} is not on a shared emptyDir volume")
    seen = set()
    for c in spec["containers"]:
        img = c.get("image", "")
        if not img.startswith(SIDECAR_REGISTRY):
            continue
        side = img[len(SIDECAR_REGISTRY) :].split(":")[0]
        seen.add(side)
        f = flags(c)
        if not same_file(spec, c, f.get("csi-address", ""), server, sock):
            problem(where, f"{c['name']}: --csi-address={f.get('csi-address')} is not polly's socket {sock}")
        if side == "csi-provisioner":
            if f.get("feature-gates", "").find("Topology=true") < 0:
                problem(where, "csi-provisioner: --feature-gates=Topology=true missing")
            if "extra-create-metadata" not in f:
                problem(where, "csi-provisioner: --extra-create-metadata missing")
        if side == "csi-snapshotter" and "extra-create-metadata" in f:
            problem(where, "csi-snapshotter: --extra-create-metadata adds parameters Polly's CreateSnapshot refuses")
    for want in ("csi-provisioner", "csi-attacher", "csi-resizer", "csi-snapshotter", "livenessprobe"):
        if want not in seen:
            problem(where, f"sidecar {want} missing")
    relay = [c for c in spec["containers"] if c.get("command", [None])[0] == "socat"]
    for c in relay:
        if not any(a.startswith(f"UNIX-CONNECT:{sock}") for a in c["command"]) or not same_file(spec, c, sock, server, sock):
            problem(where, f"{c['name']}: does not relay polly's socket {sock}")


def service_port(docs, ns, svc, port_name=None, port=None):
    for s in by_kind(docs, "Service"):
        if name_of(s) == svc and ns_of(s) == ns:
            for p in s["spec"].get("ports", []):
                if (port_name and p.get("name") == port_name) or (port and p.get("port") == port):
                    return s, p
    return None, None


def check_node(docs):
    owners = [
        (d, c)
        for d, c in containers(docs)
        if POLLY_IMAGE.match(c.get("image", "")) and c.get("args", [None])[0] == "node"
    ]
    if len(owners) != 1 or owners[0][0]["kind"] != "DaemonSet":
        problem("node", "expected one DaemonSet container running `polly node`")
        return
    ds, node = owners[0]
    spec = pod_spec(ds)
    where = f"DaemonSet/{name_of(ds)}"
    f = flags(node)
    endpoint = f.get("csi-endpoint", "")
    if not endpoint.startswith("unix://"):
        problem(where, f"--csi-endpoint {endpoint!r} must be a unix socket kubelet can reach")
        return
    sock = endpoint[len("unix://") :]
    r = resolve(spec, node, sock)
    host = (r[0] or {}).get("hostPath", {}).get("path") if r else None
    if not host:
        problem(where, f"--csi-endpoint {sock} is not on a hostPath volume")
        return
    host_sock = os.path.join(host, r[1])
    if f"/plugins/{PLUGIN}/" not in host_sock:
        problem(where, f"socket {host_sock} is not in kubelet's plugin dir for {PLUGIN}")
    if not node.get("securityContext", {}).get("privileged"):
        problem(where, "polly node must be privileged (mounts)")
    kubelet = [m for m in node.get("volumeMounts", []) if m["mountPath"].rstrip("/") == "/var/lib/kubelet"]
    if not kubelet or kubelet[0].get("mountPropagation") != "Bidirectional":
        problem(where, "/var/lib/kubelet must be mounted with mountPropagation: Bidirectional")
    env = {e["name"]: e for e in node.get("env", [])}
    if env.get("POLLY_INSTANCE_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "spec.nodeName":
        problem(where, "POLLY_INSTANCE_ID must come from spec.nodeName (the CSI node id the attacher uses)")
    reg = [c for c in spec["containers"] if "csi-node-driver-registrar" in c.get("image", "")]
    if len(reg) != 1:
        problem(where, "node-driver-registrar missing")
    else:
        rf = flags(reg[0])
        if rf.get("kubelet-registration-path") != host_sock:
            problem(where, f"registrar --kubelet-registration-path={rf.get('kubelet-registration-path')} but polly node's socket is {host_sock} on the host")
        if not same_file(spec, reg[0], rf.get("csi-address", ""), node, sock):
            problem(where, f"registrar --csi-address={rf.get('csi-address')} is not polly node's socket")
        r2 = resolve(spec, reg[0], "/registration")
        if not r2 or (r2[0] or {}).get("hostPath", {}).get("path", "").rstrip("/") != "/var/lib/kubelet/plugins_registry":
            problem(where, "registrar's /registration must be kubelet's plugins_registry")
    probe = [c for c in spec["containers"] if "livenessprobe" in c.get("image", "")]
    if not probe or not same_file(spec, probe[0], flags(probe[0]).get("csi-address", ""), node, sock):
        problem(where, "livenessprobe missing or not on polly node's socket")
    # --csi-server through the Service's variables, --server through its DNS name.
    m = re.fullmatch(r"tcp://\$\((\w+)_SERVICE_HOST\):\$\((\w+)_SERVICE_PORT_(\w+)\)", f.get("csi-server", ""))
    if "csi-server" in f:
        if not m or m.group(1) != m.group(2):
            problem(where, f"--csi-server {f['csi-server']!r}: expected tcp://$(SVC_SERVICE_HOST):$(SVC_SERVICE_PORT_NAME)")
        else:
            svc = m.group(1).lower().replace("_", "-")
            s, p = service_port(docs, ns_of(ds), svc, port_name=m.group(3).lower())
            if not s:
                problem(where, f"--csi-server: no Service {svc} with port {m.group(3).lower()} in {ns_of(ds)}")
    u = re.fullmatch(r"http://([\w-]+)\.([\w-]+)\.svc(?:\.cluster\.local)?:(\d+)", f.get("server", ""))
    if not u:
        problem(where, f"--server {f.get('server')!r}: expected http://SERVICE.NAMESPACE.svc:PORT")
    elif not service_port(docs, u.group(2), u.group(1), port=int(u.group(3)))[0]:
        problem(where, f"--server: no Service {u.group(1)} in {u.group(2)} with port {u.group(3)}")


def check_references(docs):
    """Service accounts, RBAC, Secrets, Service selectors, classes: everything named exists."""
    sas = {(ns_of(d), name_of(d)) for d in by_kind(docs, "ServiceAccount")}
    roles = {("ClusterRole", name_of(d)) for d in by_kind(docs, "ClusterRole")}
    roles |= {("Role", ns_of(d), name_of(d)) for d in by_kind(docs, "Role")}
    for d in docs_with(docs, POD_OWNERS):
        sa = pod_spec(d).get("serviceAccountName")
        if sa and (ns_of(d), sa) not in sas:
            problem(f"{d['kind']}/{name_of(d)}", f"serviceAccountName {sa} is not defined")
    for b in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding"):
        ref = b["roleRef"]
        key = ("ClusterRole", ref["name"]) if ref["kind"] == "ClusterRole" else ("Role", ns_of(b), ref["name"])
        if key not in roles:
            problem(f"{b['kind']}/{name_of(b)}", f"roleRef {ref['kind']}/{ref['name']} is not defined")
        for s in b.get("subjects", []):
            if s["kind"] == "ServiceAccount" and (s.get("namespace", ns_of(b)), s["name"]) not in sas:
                problem(f"{b['kind']}/{name_of(b)}", f"subject ServiceAccount {s['name']} is not defined")
    bound = set()
    for b in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding"):
        for s in b.get("subjects", []):
            bound.add((s.get("namespace"), s["name"], b["roleRef"]["name"]))
    for d in docs_with(docs, {"Deployment", "StatefulSet"}):
        spec = pod_spec(d)
        if any(c.get("image", "").startswith(SIDECAR_REGISTRY + "csi-provisioner") for c in spec["containers"]):
            sa = spec.get("serviceAccountName")
            for needed in ("provisioner", "attacher", "resizer", "snapshotter"):
                if not any(n == sa and ns == ns_of(d) and needed in r for ns, n, r in bound):
                    problem(f"{d['kind']}/{name_of(d)}", f"ServiceAccount {sa} has no {needed} ClusterRole bound")
    secrets = set()
    for d, c in containers(docs):
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                secrets.add((ns_of(d), ref["name"], ref["key"]))
    if len(secrets) > 1:
        problem("Secrets", f"central and nodes must share one admin token Secret, found {sorted(secrets)}")
    labels = [
        (ns_of(d), d["spec"]["template"]["metadata"].get("labels", {}), c)
        for d in docs_with(docs, {"Deployment", "DaemonSet", "StatefulSet"})
        for c in pod_spec(d)["containers"]
    ]
    for s in by_kind(docs, "Service"):
        sel = s["spec"].get("selector", {})
        pods = [(lab, c) for ns, lab, c in labels if ns == ns_of(s) and sel.items() <= lab.items()]
        if not pods:
            problem(f"Service/{name_of(s)}", f"selector {sel} matches no pod template")
        for p in s["spec"].get("ports", []):
            tp = p.get("targetPort", p["port"])
            if not any(
                (cp.get("name") == tp or cp.get("containerPort") == tp)
                for _, c in pods
                for cp in c.get("ports", [])
            ):
                problem(f"Service/{name_of(s)}", f"targetPort {tp} is no container port of the selected pods")
    classes = {name_of(d) for d in by_kind(docs, "StorageClass")}
    snapclasses = {name_of(d) for d in by_kind(docs, "VolumeSnapshotClass")}
    for d in by_kind(docs, "PersistentVolumeClaim"):
        if d["spec"].get("storageClassName") not in classes:
            problem(f"PersistentVolumeClaim/{name_of(d)}", f"storageClassName {d['spec'].get('storageClassName')} is not defined")
    for d in by_kind(docs, "VolumeSnapshot"):
        if d["spec"].get("volumeSnapshotClassName") not in snapclasses:
            problem(f"VolumeSnapshot/{name_of(d)}", "volumeSnapshotClassName is not defined")


def docs_with(docs, kinds):
    return [d for d in docs if d.get("kind") in kinds]


def check_kubernetes(root):
    loaded = load_manifests(root)
    counts = validate_schemas(root, loaded)
    counts["files"] = len({rel for rel, _, _ in loaded})
    if problems:
        return counts  # the consistency checks below assume well-formed objects
    docs = [d for _, _, d in loaded]
    _, cfg = polly_toml(docs, "polly.toml")
    services = {s["name"] for s in (cfg or {}).get("services", [])} or None
    drivers = by_kind(docs, "CSIDriver")
    if [name_of(d) for d in drivers] != [PLUGIN]:
        problem("CSIDriver", f"expected one CSIDriver named {PLUGIN}, found {[name_of(d) for d in drivers]}")
    for d in drivers:
        s = d["spec"]
        if s.get("attachRequired") is not True:
            problem("CSIDriver", "attachRequired must be true (ControllerPublishVolume is Polly's attach)")
    for d in by_kind(docs, "StorageClass"):
        if d.get("provisioner") != PLUGIN:
            problem(f"StorageClass/{name_of(d)}", f"provisioner {d.get('provisioner')!r} is not {PLUGIN}")
        check_parameters(f"StorageClass/{name_of(d)}", d.get("parameters"), services)
        for t in d.get("allowedTopologies", []):
            for e in t.get("matchLabelExpressions", []):
                if e["key"] != ZONE_KEY:
                    problem(f"StorageClass/{name_of(d)}", f"allowedTopologies key {e['key']} is not {ZONE_KEY}")
    for d in by_kind(docs, "VolumeSnapshotClass"):
        if d.get("driver") != PLUGIN:
            problem(f"VolumeSnapshotClass/{name_of(d)}", f"driver {d.get('driver')!r} is not {PLUGIN}")
        if d.get("parameters"):
            problem(f"VolumeSnapshotClass/{name_of(d)}", "Polly's CreateSnapshot takes no parameters")
    check_images(docs)
    check_controller(docs, services, cfg)
    check_node(docs)
    check_references(docs)
    return counts


# ---------------------------------------------------------------- Nomad


def load_hcl(path, where):
    try:
        opts = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
        return hcl2.loads(path.read_text(), serialization_options=opts)
    except Exception as e:  # python-hcl2 raises lark errors of several kinds
        problem(where, f"not HCL: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        return None


def one(block):
    """HCL2 blocks come as lists of dicts: the first (only) one."""
    return block[0] if isinstance(block, list) and block else block


def labelled(block):
    """Labelled blocks (job, group, task) as {label: body}, however many there are."""
    out = {}
    for b in block or []:
        out.update(b)
    return out


def tasks(job):
    for gname, group in labelled(job.get("group")).items():
        for tname, task in labelled(group.get("task")).items():
            yield gname, group, tname, task


def nomad_job(root, name, want_type, want_plugin_type):
    rel = f"deploy/nomad/{name}"
    parsed = load_hcl(root / rel, rel)
    if parsed is None:
        return None
    jobs = labelled(parsed.get("job"))
    if len(jobs) != 1:
        problem(rel, f"expected one job, found {len(jobs)}")
        return None
    (job_name, job), = jobs.items()
    if job.get("type") != want_type:
        problem(rel, f"job {job_name}: type {job.get('type')!r}, expected {want_type!r}")
    plugins = [(t, one(task["csi_plugin"])) for _, _, t, task in tasks(job) if "csi_plugin" in task]
    if len(plugins) != 1:
        problem(rel, f"expected one task with a csi_plugin block, found {len(plugins)}")
        return None
    tname, plugin = plugins[0]
    task = next(task for _, _, t, task in tasks(job) if t == tname)
    if plugin.get("id") != NOMAD_PLUGIN:
        problem(rel, f"csi_plugin id {plugin.get('id')!r}, expected {NOMAD_PLUGIN!r}")
    if plugin.get("type") != want_plugin_type:
        problem(rel, f"csi_plugin type {plugin.get('type')!r}, expected {want_plugin_type!r}")
    config = one(task.get("config")) or {}
    if task.get("driver") != "docker" or not POLLY_IMAGE.match(config.get("image", "")):
        problem(rel, "the plugin task must run the polly image with the docker driver")
    return rel, job, task, plugin, config


def check_nomad(root):
    ctl = nomad_job(root, "polly-controller.nomad.hcl", "service", "controller")
    node = nomad_job(root, "polly-node.nomad.hcl", "system", "node")
    services = None
    if ctl:
        rel, job, task, plugin, config = ctl
        if config.get("args", [None])[0] != "serve":
            problem(rel, "the controller task must run `polly serve`")
        tmpl = [one(t) for t in (task.get("template") or []) if str(one(t).get("destination", "")).endswith(".toml")]
        cfg = None
        if len(tmpl) != 1:
            problem(rel, "expected one template rendering polly's TOML config")
        else:
            try:
                cfg = tomllib.loads(textwrap.dedent(tmpl[0]["data"].split("\n", 1)[1].rsplit("\n", 1)[0]))
            except (tomllib.TOMLDecodeError, IndexError, KeyError) as e:
                problem(rel, f"the config template is not TOML: {e}")
        if cfg is not None:
            services = {s["name"] for s in cfg.get("services", [])}
            want = f"unix://{plugin.get('mount_dir', '').rstrip('/')}/csi.sock"
            if cfg.get("csi", {}).get("listen") != want:
                problem(rel, f"[csi] listen {cfg.get('csi', {}).get('listen')!r}: Nomad expects {want} (mount_dir)")
        groups = labelled(job.get("group"))
        if any(g.get("count", 1) != 1 for g in groups.values()):
            problem(rel, "central Polly (sled store) must run with count = 1")
    if node:
        rel, job, task, plugin, config = node
        args = config.get("args", [])
        if args[:1] != ["node"]:
            problem(rel, "the node task must run `polly node`")
        want = f"unix://{plugin.get('mount_dir', '').rstrip('/')}/csi.sock"
        if "--csi-endpoint" not in args or args[args.index("--csi-endpoint") + 1] != want:
            problem(rel, f"--csi-endpoint must be {want} (mount_dir)")
        if config.get("privileged") is not True:
            problem(rel, "the node task must be privileged (mounts)")
    rel = "deploy/nomad/volume.hcl"
    vol = load_hcl(root / rel, rel)
    if vol is None:
        return
    if vol.get("type") != "csi" or vol.get("plugin_id") != NOMAD_PLUGIN:
        problem(rel, f"type {vol.get('type')!r} / plugin_id {vol.get('plugin_id')!r}: expected csi / {NOMAD_PLUGIN}")
    for k in ("id", "name"):
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", str(vol.get(k, ""))):
            problem(rel, f"{k} {vol.get(k)!r} is not a Polly volume name")
    sizes = [parse_bytes(rel, vol.get(k)) for k in ("capacity_min", "capacity_max")]
    if None not in sizes and sizes[0] > sizes[1]:
        problem(rel, "capacity_min is above capacity_max")
    caps = vol.get("capability") or []
    if not caps:
        problem(rel, "no capability block")
    modes = {"single-node-reader-only", "single-node-writer", "multi-node-reader-only", "multi-node-single-writer", "multi-node-multi-writer"}
    for c in caps:
        if c.get("access_mode") not in modes or c.get("attachment_mode") != "file-system":
            problem(rel, f"capability {c}: Polly serves file-system attachments with a CSI access mode")
        if c.get("access_mode") == "multi-node-single-writer":
            problem(rel, "multi-node-single-writer is refused by Polly")
    check_parameters(rel, vol.get("parameters"), services)
    for kind, reqs in (one(vol.get("topology_request")) or {}).items():
        for req in reqs if isinstance(reqs, list) else [reqs]:
            for topo in req.get("topology", []):
                for seg in topo.get("segments", {}) if isinstance(topo.get("segments"), dict) else {}:
                    if seg != ZONE_KEY:
                        problem(rel, f"topology_request {kind}: segment {seg!r} is not {ZONE_KEY}")


def parse_bytes(where, value):
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]i?B?|B)?\s*", str(value or ""))
    if not m:
        problem(where, f"capacity {value!r} is not a size")
        return None
    unit = (m.group(2) or "B").rstrip("B") or ""
    scale = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    return int(m.group(1)) * scale[unit]


def check_names(root):
    """Every *.polly.io name in deploy/ is the plugin's or the zone key's (typos included)."""
    known = {PLUGIN, ZONE_KEY.split("/")[0]}
    for f in sorted((root / "deploy").rglob("*")):
        if f.is_file() and "schemas" not in f.parts and f.suffix in (".yaml", ".hcl", ".md", ""):
            text = f.read_text()
            names = [m.group(0) for m in re.finditer(r"[\w-]+(?:\.[\w-]+)*\.io\b", text)]
            keys = [m.group(0) for m in re.finditer(r"\btopology\.[\w.-]*poll[\w.-]*\.io/[\w-]+", text)]
            for n in [n for n in names if "poll" in n and n not in known] + [k for k in keys if k != ZONE_KEY]:
                problem(f.relative_to(root), f"{n!r}: the plugin is {PLUGIN}, the zone key {ZONE_KEY}")


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    counts = check_kubernetes(root)
    check_nomad(root)
    check_names(root)
    for p in problems:
        print(f"check-deploy: FAIL {p}")
    if problems:
        print(f"check-deploy: {len(problems)} problem(s)")
        return 1
    files = counts["files"]
    print(
        f"check-deploy: {counts['k8s']} Kubernetes objects in {files} files valid against the "
        f"Kubernetes {K8S_VERSION} JSON schemas (kubernetes-validate {kubernetes_validate.__version__}, strict)"
    )
    print(
        f"check-deploy: {counts['crd']} snapshot objects valid against the vendored "
        "external-snapshotter v8.6.0 CRD schemas (strict; their CEL rules are not evaluated)"
    )
    print("check-deploy: Nomad jobs and volume parsed (python-hcl2, HCL2 grammar) and checked")
    print("check-deploy: cross-file checks passed (plugin name, sockets, Services, RBAC, images, parameters)")
    print("check-deploy: not checked here: a live cluster (nothing is applied), field values the schemas leave free")
    return 0


if __name__ == "__main__":
    sys.exit(main())
