"""Cross-checks of deploy/ that no schema catches, for tests/deploy_files.rs.

    python3 tests/deploy/check_manifests.py compose|kubernetes REPO_DIR

Exits non-zero with one line per problem. Needs PyYAML (tests/requirements-deploy.txt).
"""

import re
import sys
import tomllib
from pathlib import Path

import yaml

problems = []


def check(ok, what):
    if not ok:
        problems.append(what)


def seconds(text):
    """'45s', '1m30s', 45 -> seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    total, matched = 0.0, False
    for n, unit in re.findall(r"(\d+(?:\.\d+)?)(h|m|s)", str(text)):
        total += float(n) * {"h": 3600, "m": 60, "s": 1}[unit]
        matched = True
    return total if matched else None


def compose(repo):
    base = repo / "deploy" / "compose"
    doc = yaml.safe_load((base / "docker-compose.yml").read_text())
    services = doc.get("services", {})
    fleet = {"redis", "fleet-a", "fleet-b"}
    check(set(services) == {"turnd", "prometheus", "grafana"} | fleet, f"services: {sorted(services)}")
    # The fleet (docs/cluster.md) runs only with `--profile fleet`; the default stays one node.
    for name in fleet:
        check(services.get(name, {}).get("profiles") == ["fleet"], f"{name}: not in profile fleet")
    for name in ("turnd", "prometheus", "grafana"):
        check("profiles" not in services.get(name, {}), f"{name}: must run without a profile")
    redis_cmd = services.get("redis", {}).get("command", [])
    redis_port = redis_cmd[redis_cmd.index("--port") + 1] if "--port" in redis_cmd else "6379"
    seen = {}
    for name in ("fleet-a", "fleet-b"):
        svc = services.get(name, {})
        cfg_file = next((v.split(":")[0] for v in svc.get("volumes", [])
                         if v.endswith(":/etc/turnd/turnd.toml:ro")), None)
        check(cfg_file is not None, f"{name}: no turnd.toml mounted")
        if cfg_file is None:
            continue
        cfg = tomllib.loads((base / cfg_file).read_text())
        check(cfg.get("store") == f"redis://127.0.0.1:{redis_port}/0",
              f"{name}: store {cfg.get('store')} is not the redis service")
        check(svc.get("environment", {}).get("TURND_CONFIG") == "/etc/turnd/turnd.toml",
              f"{name}: TURND_CONFIG")
        check("redis" in svc.get("depends_on", []), f"{name}: depends_on redis")
        grace = seconds(svc.get("stop_grace_period", "10s"))
        check(grace is not None and grace > cfg.get("drain_timeout", 30),
              f"{name}: stop_grace_period must exceed drain_timeout")
        for key in ("node_id", "metrics_listen", "relay_ports"):
            check(cfg.get(key) not in seen.get(key, set()), f"{name}: {key} shared with another node")
            seen.setdefault(key, set()).add(cfg.get(key))
        for addr in cfg.get("listen", []):
            check(addr not in seen.get("listen", set()), f"{name}: listen {addr} shared")
            seen.setdefault("listen", set()).add(addr)
    for name, svc in services.items():
        check(svc.get("network_mode") == "host", f"{name}: network_mode is not host")
        check("image" in svc, f"{name}: no image")
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                check((base / src).exists(), f"{name}: volume source {src} does not exist")
    turnd = services.get("turnd", {})
    check((repo / turnd.get("build", {}).get("context", "/nonexistent") / "Dockerfile").exists()
          or (base / turnd.get("build", {}).get("context", "/nonexistent") / "Dockerfile").exists(),
          "turnd: build context has no Dockerfile")
    env = turnd.get("environment", {})
    check(env.get("TURND_CONFIG") == "/etc/turnd/turnd.toml", "turnd: TURND_CONFIG")
    example = tomllib.loads((base / "turnd.toml").read_text())
    drain = example.get("drain_timeout", 30)
    grace = seconds(turnd.get("stop_grace_period", "10s"))
    check(grace is not None and grace > drain,
          f"turnd: stop_grace_period {grace} s must exceed drain_timeout {drain} s")
    # Prometheus scrapes the metrics_listen of the example config.
    prom = yaml.safe_load((repo / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] for sc in job.get("static_configs", [])
               for t in sc["targets"]]
    check(example.get("metrics_listen") in targets,
          f"prometheus targets {targets} miss metrics_listen {example.get('metrics_listen')}")
    cmd = " ".join(services.get("prometheus", {}).get("command", []))
    check("--config.file=/etc/prometheus/prometheus.yml" in cmd, "prometheus: --config.file")
    ds = yaml.safe_load((repo / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    listen = re.search(r"--web.listen-address=(\S+)", cmd)
    check(listen and any(d["url"].endswith(listen.group(1)) for d in ds["datasources"]),
          "grafana datasource url does not point at prometheus' listen address")
    dash = yaml.safe_load((repo / "deploy/grafana/provisioning/dashboards/turnd.yml").read_text())
    path = dash["providers"][0]["options"]["path"]
    check(any(v.endswith(":" + path + ":ro") for v in services.get("grafana", {}).get("volumes", [])),
          f"grafana: dashboards path {path} is not mounted")


def kubernetes(repo):
    docs = {}
    for f in sorted((repo / "deploy" / "kubernetes").glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d:
                docs[d["kind"]] = d
    for kind in ["Namespace", "ConfigMap", "Secret", "DaemonSet", "Service", "PodMonitor"]:
        check(kind in docs, f"no {kind}")
    if problems:
        return
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    labels = docs["DaemonSet"]["spec"]["template"]["metadata"]["labels"]
    check(pod.get("hostNetwork") is True, "DaemonSet: hostNetwork")
    check(pod.get("dnsPolicy") == "ClusterFirstWithHostNet", "DaemonSet: dnsPolicy")
    config = tomllib.loads(docs["ConfigMap"]["data"]["turnd.toml"])
    drain = config.get("drain_timeout", 30)
    check(pod.get("terminationGracePeriodSeconds", 30) > drain,
          f"terminationGracePeriodSeconds must exceed drain_timeout {drain}")
    check(str(config.get("metrics_listen", "")).startswith("0.0.0.0:"),
          "metrics_listen must be reachable from the kubelet's probes")
    metrics_port = int(str(config["metrics_listen"]).rsplit(":", 1)[1])
    (c,) = pod["containers"]
    ports = {p["name"]: p for p in c["ports"]}
    check(ports.get("metrics", {}).get("containerPort") == metrics_port, "metrics port")
    check({(p["containerPort"], p["protocol"]) for p in c["ports"]} >=
          {(3478, "UDP"), (3478, "TCP"), (5349, "TCP")}, "TURN ports")
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness on /healthz")
    check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness on /readyz")
    sc = c["securityContext"]
    check(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    check(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities drop ALL")
    check(pod["securityContext"].get("runAsNonRoot") is True, "runAsNonRoot")
    mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "config")
    env = {e["name"]: e.get("value") for e in c["env"]}
    check(env.get("TURND_CONFIG") == mount + "/turnd.toml", "TURND_CONFIG is not the mounted file")
    secret = docs["Secret"]
    check(set(secret["stringData"]) <= {"TURND_AUTH_SECRETS", "TURND_ADMIN_TOKEN"},
          "Secret keys must be TURND_* variables")
    check(c["envFrom"][0]["secretRef"]["name"] == secret["metadata"]["name"], "envFrom Secret")
    svc = docs["Service"]["spec"]
    check(svc["selector"].items() <= labels.items(), "Service selector")
    pm = docs["PodMonitor"]
    check(pm["apiVersion"] == "monitoring.coreos.com/v1", "PodMonitor apiVersion")
    check(pm["spec"]["selector"]["matchLabels"].items() <= labels.items(), "PodMonitor selector")
    check(all(e["port"] in ports for e in pm["spec"]["podMetricsEndpoints"]),
          "PodMonitor port names a container port")
    namespaces = {d["metadata"].get("namespace") for d in docs.values() if d["kind"] != "Namespace"}
    check(namespaces == {docs["Namespace"]["metadata"]["name"]}, f"namespaces {namespaces}")


def main():
    what, repo = sys.argv[1], Path(sys.argv[2])
    {"compose": compose, "kubernetes": kubernetes}[what](repo)
    for p in problems:
        print(f"{what}: {p}")
    sys.exit(1 if problems else 0)


main()
