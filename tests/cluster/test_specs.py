"""Keep cluster/ from rotting: every spec parses, has what its kind needs, runs only options
`localnat curate` knows (checked with the real parser), and carries no literal secrets."""

from __future__ import annotations

import functools
import re
import shlex
from pathlib import Path

import pytest
import yaml

from localnat.options import all_options, build_parser, parse_config

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
YAML_FILES = sorted(p for p in CLUSTER.rglob("*") if p.suffix in (".yaml", ".yml"))
KNOWN_KEYS = {o.key for o in all_options()}
CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
CURATE_CMD = re.compile(r"-m jobs\.curate(?=[\s`]|$)[^\n`;|&]*")
SECRET_NAME = re.compile(r"(?i)secret|password|token|access_key|api_key|credential")
SECRET_TEXT = re.compile(
    r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY|"
    r"(?i:aws_secret_access_key)\s*[:=]\s*['\"]?[A-Za-z0-9/+=]{20,}"
)
POD = ("template", "spec")


def need(ok, problem: str) -> list[str]:
    return [] if ok else [problem]


def dig(node, *keys):
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def walk(node):
    """Every mapping inside node, depth first."""
    if isinstance(node, dict):
        yield node
        node = list(node.values())
    for child in node if isinstance(node, list) else ():
        yield from walk(child)


def load(path: Path) -> tuple[list[dict], list]:
    """(objects, localnat configs) of a file. YAML in ConfigMap data is opened too: documents
    with a `kind` are objects, the others localnat config files."""
    objects, configs = [], []

    def add(doc):
        objects.append(doc)
        data = (doc.get("data") or {}) if doc.get("kind") == "ConfigMap" else {}
        for text in (t for k, t in data.items() if k.endswith((".yaml", ".yml"))):
            for inner in yaml.safe_load_all(text):
                add(inner) if isinstance(inner, dict) and "kind" in inner else configs.append(inner)

    for doc in yaml.safe_load_all(path.read_text()):
        add(doc) if isinstance(doc, dict) else None
    return objects, configs


@functools.lru_cache(maxsize=1)
def everything():
    loaded = {p: load(p) for p in YAML_FILES}
    objects = [o for objs, _ in loaded.values() for o in objs]
    configs = [c for _, cfgs in loaded.values() for c in cfgs]
    text = "\n".join(p.read_text() for p in sorted(CLUSTER.rglob("*")) if p.is_file())
    return loaded, objects, configs, text


def cron_problems(expr) -> list[str]:
    fields = str(expr).split()
    ok = len(fields) == 5
    for field, (lo, hi) in zip(fields, CRON_RANGES, strict=False):
        for part in field.split(","):
            m = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/([1-9]\d*))?", part)
            ok = ok and bool(m) and all(lo <= int(n) <= hi for n in m.group(2, 3) if n)
    return need(ok, f"bad cron schedule {expr!r}")


def cluster_problems(spec) -> list[str]:
    head, groups = dig(spec, "headGroupSpec"), dig(spec, "workerGroupSpecs") or []
    p = need(dig(head, *POD, "containers"), "headGroupSpec has no containers")
    p += need(dig(spec, "enableInTreeAutoscaling") is True, "enableInTreeAutoscaling not true")
    gpu = [
        g
        for g in groups
        for c in dig(g, *POD, "containers") or []
        if "nvidia.com/gpu" in (dig(c, "resources", "limits") or {})
    ]
    p += need(gpu, "no worker group with an nvidia.com/gpu limit")
    for g in gpu:
        p += need(
            g.get("minReplicas") == 0 and g.get("maxReplicas", 0) >= 1,
            f"GPU group {g.get('groupName')}: need minReplicas 0, maxReplicas >= 1",
        )
        p += need(
            any(t.get("key") == "nvidia.com/gpu" for t in dig(g, *POD, "tolerations") or []),
            f"GPU group {g.get('groupName')}: no nvidia.com/gpu toleration",
        )
    for params in [dig(x, "rayStartParams") or {} for x in [head, *groups]]:
        p += [
            f"rayStartParams {k}: {v!r} is not a string"
            for k, v in params.items()
            if not isinstance(v, str)
        ]
    return p


def job_problems(spec) -> list[str]:
    p = need("jobs.curate" in str(dig(spec, "entrypoint")), "entrypoint does not run jobs.curate")
    p += need(dig(spec, "shutdownAfterJobFinishes") is True, "shutdownAfterJobFinishes not true")
    p += need(isinstance(dig(spec, "ttlSecondsAfterFinished"), int), "no ttlSecondsAfterFinished")
    return p + cluster_problems(dig(spec, "rayClusterSpec"))


def rayup_problems(doc) -> list[str]:
    types = doc.get("available_node_types") or {}
    p = need(dig(doc, "provider", "type"), "no provider.type")
    p += need(isinstance(doc.get("idle_timeout_minutes"), (int, float)), "no idle_timeout_minutes")
    p += need(dig(types, doc.get("head_node_type"), "resources", "CPU") == 0, "head CPU must be 0")
    gpu = [t for t in types.values() if (dig(t, "resources", "GPU") or 0) >= 1]
    p += need(
        gpu and all(t.get("min_workers") == 0 and t.get("max_workers", 0) >= 1 for t in gpu),
        "need GPU worker types with min_workers 0 and max_workers >= 1",
    )
    return p + need("localnat" in " ".join(doc.get("setup_commands") or []), "no localnat install")


def object_problems(doc) -> list[str]:
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if kind in ("RayCluster", "RayJob"):
        return (cluster_problems if kind == "RayCluster" else job_problems)(spec)
    if kind == "RayCronJob":  # KubeRay 1.6: jobTemplate is a RayJob spec
        return cron_problems(spec.get("schedule")) + job_problems(spec.get("jobTemplate"))
    if kind == "CronJob":
        has_pod = dig(spec, "jobTemplate", "spec", *POD, "containers")
        return cron_problems(spec.get("schedule")) + need(has_pod, "CronJob has no containers")
    if "cluster_name" in doc:
        return rayup_problems(doc)
    return need(kind in ("ConfigMap", "ServiceAccount", "Role", "RoleBinding"), f"kind {kind}?")


def curate_args(command: str) -> list[str] | None:
    words = shlex.split(command, comments=True)
    return words[words.index("jobs.curate") + 1 :] if "jobs.curate" in words else None


def entrypoint_problems(command: str) -> list[str]:
    args, parser = curate_args(command), build_parser()
    if args is None:
        return [f"not a jobs.curate command: {command!r}"]
    try:
        parser.parse_args(args)
    except SystemExit:
        return [f"localnat curate rejects {args}"]
    inexact = [
        w
        for w in args
        if w.startswith("--")  # argparse would take abbreviations
        and w.split("=")[0] not in parser._option_string_actions
    ]
    return need(not inexact, f"unknown or abbreviated options {inexact}")


def config_problems(cfg, tmp_path: Path) -> list[str]:
    if not isinstance(cfg, dict):
        return [f"config is not a mapping: {cfg!r}"]
    unknown = sorted(str(k) for k in cfg if str(k).replace("_", "-") not in KNOWN_KEYS)
    if unknown:
        return [f"unknown config keys {unknown}"]
    (path := tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    try:
        parse_config(["--config", str(path)])  # the values too: choices, windows, ranges
    except SystemExit:
        return [f"localnat curate rejects config {cfg}"]
    return []


def secret_problems(objects, text: str) -> list[str]:
    maps, aws = list(walk(objects)), ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    p = [
        f"literal {d['name']}"
        for d in maps
        if "value" in d and SECRET_NAME.search(str(d.get("name")))
    ]
    p += [
        f"{d['name']} not from a secretKeyRef"
        for d in maps
        if d.get("name") in aws and not dig(d, "valueFrom", "secretKeyRef")
    ]
    p += [
        "Secret with data"
        for d in maps
        if d.get("kind") == "Secret" and (d.get("data") or d.get("stringData"))
    ]
    return p + [f"secret-looking text {m.group(0)[:16]}..." for m in SECRET_TEXT.finditer(text)]


def dockerfile_problems(text: str) -> list[str]:
    text = re.sub(r"\\\n", " ", text)
    p = need(re.search(r"(?m)^FROM\s+\S+", text), "no FROM line")
    p += need(re.search(r"(?m)pip install[^\n]*\s\.(\s|$)", text), "no `pip install .`")
    p += need(not re.search(r"(?i)trust[_-]remote[_-]code", text), "mentions trust_remote_code")
    return p + [
        f"secret-looking {m.group(0).strip()}"
        for m in re.finditer(
            r"(?im)^\s*(ENV|ARG)\s[^\n]*(SECRET|PASSWORD|TOKEN|ACCESS_KEY|API_KEY)[^\n]*", text
        )
    ]


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(CLUSTER)))
def test_every_yaml_has_what_its_kind_needs(path):
    objects, _ = everything()[0][path]
    assert objects, f"{path} holds no documents"
    assert [f"{o.get('kind', 'ray up')}: {e}" for o in objects for e in object_problems(o)] == []


def test_every_deployment_path_is_there():
    loaded, objects, _, _ = everything()
    kinds = {o.get("kind", "ray-up" if "cluster_name" in o else None) for o in objects}
    assert {"RayCluster", "RayJob", "RayCronJob", "CronJob", "ConfigMap", "ray-up"} <= kinds
    assert {"ray-up/aws.yaml", "ray-up/gcp.yaml"} <= {str(p.relative_to(CLUSTER)) for p in loaded}


def test_every_jobs_curate_command_parses():
    _, objects, _, text = everything()
    structured = [dig(o, "spec", "entrypoint") for o in objects if o.get("kind") == "RayJob"]
    structured += [
        dig(o, "spec", "jobTemplate", "entrypoint")
        for o in objects
        if o.get("kind") == "RayCronJob"
    ]  # + comments, README, Dockerfile:
    joined = re.sub(r"\\\n[ \t#]*", " ", text)  # shell line continuations, in comments too
    in_text = [f"python {m.group(0)}" for m in CURATE_CMD.finditer(joined)]
    assert len(structured) >= 3 and len(in_text) >= len(structured) + 2  # + the ray-up examples
    assert [e for c in structured + in_text for e in entrypoint_problems(str(c))] == []
    # each --config named is a ConfigMap key, and something is mounted at its directory
    keys = {k for o in objects if o.get("kind") == "ConfigMap" for k in o.get("data") or {}}
    mounts = {d.get("mountPath") for d in walk(objects)}
    commands = structured + in_text
    for cfg in {
        getattr(build_parser().parse_args(curate_args(c)), "config", None) for c in commands
    }:
        assert cfg is None or (Path(cfg).name in keys and str(Path(cfg).parent) in mounts), cfg


def test_embedded_configs_use_known_options(tmp_path):
    _, objects, configs, _ = everything()
    assert configs, "no localnat config found in any ConfigMap"
    assert [e for c in configs for e in config_problems(c, tmp_path)] == []
    defined = {dig(o, "metadata", "name") for o in objects if o.get("kind") == "ConfigMap"}
    assert {dig(d, "configMap", "name") for d in walk(objects) if "configMap" in d} <= defined


def test_cronjob_rbac_lets_it_create_rayjobs():
    for objects, _ in everything()[0].values():
        named = {(o.get("kind"), dig(o, "metadata", "name")): o for o in objects}
        for cron in (o for (kind, _), o in named.items() if kind == "CronJob"):
            sa = dig(cron, "spec", "jobTemplate", "spec", *POD, "serviceAccountName")
            assert ("ServiceAccount", sa) in named
            roles = {
                n
                for (k, n), o in named.items()
                if k == "Role"
                and any(
                    "rayjobs" in r.get("resources", [])
                    and "ray.io" in r.get("apiGroups", [])
                    and {"create", "get"} <= set(r.get("verbs", []))
                    for r in o.get("rules", [])
                )
            }
            assert any(
                k == "RoleBinding"
                and dig(o, "roleRef", "name") in roles
                and any(s.get("name") == sa for s in o.get("subjects", []))
                for (k, _), o in named.items()
            )


def test_no_secrets_a_sound_dockerfile_one_ray_version_and_image():
    _, objects, _, text = everything()
    assert secret_problems(objects, text) == []
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert dockerfile_problems(dockerfile) == []
    versions = {d["rayVersion"] for d in walk(objects) if "rayVersion" in d}
    versions |= set(re.findall(r"ray\[[^\]]*\]==([\w.]+)", text))  # ray-up installs
    assert versions == set(re.findall(r"(?m)^ARG RAY_VERSION=(\S+)", dockerfile))
    clusters = [d for d in walk(objects) if "headGroupSpec" in d]
    assert len({c["image"] for d in clusters for c in walk(d) if "image" in c}) == 1


def test_the_checkers_reject_bad_specs(tmp_path):
    (bad := tmp_path / "rayjob.yaml").write_text(
        (CLUSTER / "kuberay/rayjob.yaml")
        .read_text()
        .replace("--config /config", "--no-such-flag --config /config")
        .replace("shutdownAfterJobFinishes: true", "shutdownAfterJobFinishes: false")
        .replace("minReplicas: 0", "minReplicas: 1")
        .replace('num-cpus: "0"', "num-cpus: 0")
    )
    (job,), _ = load(bad)
    problems = " | ".join(object_problems(job) + entrypoint_problems(job["spec"]["entrypoint"]))
    for needle in ("shutdownAfterJobFinishes", "minReplicas", "num-cpus", "--no-such-flag"):
        assert needle in problems
    assert entrypoint_problems("python -m jobs.curate --batch-tok 8")  # an abbreviation
    assert config_problems({"no-such-key": 1}, tmp_path)
    assert config_problems({"dtype": "bf16"}, tmp_path)
    assert cron_problems("0 2 * *") and cron_problems("61 2 * * *")
    assert not cron_problems("*/5 2 * * 1-5")
    env = [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x" * 40}]
    assert len(secret_problems(env, "AWS_SECRET_ACCESS_KEY=" + "a1B2" * 10)) == 3
    bad_docker = "RUN pip install localnat\nENV HF_TOKEN=hf_x --trust-remote-code"
    assert len(dockerfile_problems(bad_docker)) == 4
