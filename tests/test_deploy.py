"""The deployment files in deploy/ parse, and every flag, environment variable
and metric they use exists (docker, compose and kubernetes cannot run here)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from fastimg.cli.worker import ENV_HELP, build_parser
from fastimg.queue.address import parse
from fastimg.queue.connect import redis_url
from fastimg.worker.metrics import Metrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
KNOWN_FLAGS = {opt for action in build_parser()._actions for opt in action.option_strings}
KNOWN_ENV = set(re.findall(r"\b(REDIS_[A-Z_]+|FASTIMG_[A-Z_]+)\b", ENV_HELP))


def worker_args(args):
    flags = [a for a in args if a.startswith("-")]
    assert flags, "no flags found"
    unknown = [f for f in flags if f not in KNOWN_FLAGS]
    assert not unknown, unknown
    parsed = build_parser().parse_args(args)  # values valid too
    return parsed


def test_dockerfile_command():
    text = (DEPLOY / "Dockerfile").read_text()
    cmds = re.findall(r"^CMD (\[.*\])$", text, re.M)
    assert len(cmds) == 2 and re.findall(r'^ENTRYPOINT \["gpu-image-worker"\]$', text, re.M)
    for cmd in cmds:
        worker_args(json.loads(cmd))
    assert "--target gpu" in text and "CMAKE_CUDA_ARCHITECTURES=90" in text and "FASTIMG_CUDA=OFF" in text
    for env in re.findall(r"ENV (.*)", text):
        for name in re.findall(r"([A-Z_]+)=", env):
            assert name in KNOWN_ENV | {"PATH", "PYTHONUNBUFFERED"}, name


def test_compose_file():
    doc = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    redis_cmd = doc["services"]["redis"]["command"]
    assert "noeviction" in redis_cmd and "--appendonly" in redis_cmd
    worker = doc["services"]["worker"]
    args = worker_args(worker["command"])
    assert args.allowed_root == ["/srv/uploads"]
    assert set(worker["environment"]) <= KNOWN_ENV
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    mounts = {v.split(":")[1] for v in worker["volumes"]}
    assert "/srv/uploads" in mounts and "uploads:/srv/uploads" in doc["services"]["server"]["volumes"]
    assert set(doc["services"]["server"]["environment"]) <= KNOWN_ENV


def test_pm2_and_systemd():
    pm2 = (DEPLOY / "ecosystem.config.js").read_text()
    args = re.search(r"args: \[(.*?)\]", pm2, re.S).group(1)
    worker_args(re.findall(r"'([^']*)'", args))
    for name in re.findall(r"^\s+([A-Z_]+):", pm2, re.M):
        assert name in KNOWN_ENV, name
    unit = (DEPLOY / "gpu-image-worker.service").read_text()
    exec_start = re.search(r"^ExecStart=(\S+) (.*)$", unit, re.M)
    assert exec_start.group(1).endswith("/gpu-image-worker")
    worker_args(shlex.split(exec_start.group(2)))
    assert "TimeoutStopSec=70" in unit


def test_kubernetes_manifests():
    deployment = yaml.safe_load((DEPLOY / "kubernetes" / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = worker_args(container["args"])
    assert args.metrics_port == 9108
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {e["name"] for e in container["env"]} <= KNOWN_ENV
    secret = yaml.safe_load((DEPLOY / "kubernetes" / "secret.yaml").read_text())
    ref = next(e for e in container["env"] if e["name"] == "REDIS_PASSWORD")["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    auth, scaled = yaml.safe_load_all((DEPLOY / "kubernetes" / "keda-scaledobject.yaml").read_text())
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == "image:jobs"
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert auth["spec"]["secretTargetRef"][0]["name"] == secret["metadata"]["name"]


def sentinel_address(args):
    """What the worker makes of its -redis/-db: Sentinels and a service."""
    address = parse(redis_url(args.redis, args.db, {}))
    assert address.sentinels and address.service, args.redis
    return address


def test_compose_file_with_sentinel():
    services = yaml.safe_load((DEPLOY / "docker-compose.sentinel.yml").read_text())["services"]
    worker = services["worker"]
    address = sentinel_address(worker_args(worker["command"]))
    names = sorted(name for name in services if name.startswith("sentinel-"))
    assert address.sentinels == tuple((name, 26379) for name in names) and len(names) == 3
    assert {"REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD"} <= set(worker["environment"]) <= KNOWN_ENV
    for name in names:
        conf = services[name]["command"][-1]
        monitor = re.search(r"^sentinel monitor (\S+) (\S+) 6379 (\d)$", conf, re.M)
        assert monitor and monitor.group(1) == address.service and int(monitor.group(3)) == 2  # a majority of 3
        assert f"sentinel auth-pass {address.service} $$REDIS_PASSWORD" in conf and "requirepass" in conf
        primary = monitor.group(2)
    nodes = [s["command"] for n, s in services.items() if n.startswith("redis-")]
    replica = next(node for node in nodes if "--replicaof" in node)
    assert replica[replica.index("--replicaof") + 1] == primary
    for node in nodes:
        assert "noeviction" in node and "--appendonly" in node and "--masterauth" in node


def test_kubernetes_manifests_with_sentinel():
    deployment = yaml.safe_load((DEPLOY / "kubernetes" / "sentinel" / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    address = sentinel_address(worker_args(container["args"]))
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    secret = yaml.safe_load((DEPLOY / "kubernetes" / "secret.yaml").read_text())
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert set(refs) == {"REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD"} <= KNOWN_ENV
    assert all(r["name"] == secret["metadata"]["name"] and r["key"] in secret["stringData"] for r in refs.values())
    auth, scaled = yaml.safe_load_all((DEPLOY / "kubernetes" / "sentinel" / "keda-scaledobject.yaml").read_text())
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "redis-sentinel" and trigger["metadata"]["listName"] == "image:jobs"
    assert trigger["metadata"]["sentinelMaster"] == address.service
    assert trigger["metadata"]["addresses"] == ",".join(f"{h}:{p}" for h, p in address.sentinels)
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    params = {t["parameter"]: (t["name"], t["key"]) for t in auth["spec"]["secretTargetRef"]}
    assert params == {
        "password": (secret["metadata"]["name"], refs["REDIS_PASSWORD"]["key"]),
        "sentinelPassword": (secret["metadata"]["name"], refs["REDIS_SENTINEL_PASSWORD"]["key"]),
    }


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",), "info": ("_info",)}


def metric_names():
    return {m.name + suffix for m in Metrics().registry.collect() for suffix in SUFFIXES[m.type]}


@pytest.mark.parametrize("path", ["prometheus-alerts.yml", "grafana-dashboard.json"])
def test_alerts_and_dashboard_use_real_metrics(path):
    text = (DEPLOY / path).read_text()
    doc = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if path.endswith(".json"):
        exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    else:
        exprs = [rule["expr"] for group in doc["groups"] for rule in group["rules"]]
    used = {m for e in exprs for m in re.findall(r"\b(fastimg_[a-z_]+)", e)}
    missing = used - metric_names()
    assert used and not missing, missing
