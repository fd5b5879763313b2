"""Deployment files: docker compose and the Kubernetes example are wired as docs/deployment.md says.

Every manifest is parsed (PyYAML) and checked: the workers' storage URL points at the proxy,
the proxy's at PostgreSQL, one artifact store is mounted by the workers and the dashboard, the
dashboard is not published beyond 127.0.0.1, and every command line is one our parsers accept.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import sqlalchemy
import yaml

from vae_search.cli import ARTIFACTS_ENV, STORAGE_ENV, build_dashboard_parser, build_run_parser
from vae_search.storage.proxy import build_parser as build_serve_parser
from vae_search.storage.url import StorageURL

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
K8S = DOCKER / "k8s"


def _interpolate(value: Any) -> str:
    """Compose's ``${VAR:-default}`` with the defaults (the environment is not consulted)."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: m.group(2), str(value))


def _parse(parser: Any, argv: list[str]) -> Any:
    return parser.parse_args([_interpolate(a) for a in argv])


# -- docker compose --------------------------------------------------------------------------

def test_compose_puts_the_proxy_between_the_workers_and_postgresql():
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"db", "proxy", "worker", "dashboard"}
    db, proxy, worker, dashboard = (services[k] for k in ("db", "proxy", "worker", "dashboard"))

    # the workers: the proxy's URL, nothing else
    worker_url = _interpolate(worker["environment"][STORAGE_ENV])
    host, port = StorageURL.parse(worker_url).proxy
    assert host == "proxy"
    served = _parse(build_serve_parser(), proxy["command"])
    assert served.port == port and served.host == "0.0.0.0"
    assert proxy["entrypoint"] == ["vae-search", "serve"]
    args = _parse(build_run_parser(), worker["command"])
    assert args.trials >= 1 and "--storage" not in worker["command"]
    assert int(_interpolate(worker["deploy"]["replicas"])) >= 2
    assert worker["depends_on"] == {"proxy": {"condition": "service_healthy"}}

    # the proxy (and only the proxy and the dashboard): PostgreSQL, as the db service defines it
    database_url = proxy["environment"][STORAGE_ENV]
    assert dashboard["environment"][STORAGE_ENV] == database_url  # one anchor
    url = sqlalchemy.make_url(_interpolate(database_url))
    env = {k: _interpolate(v) for k, v in db["environment"].items()}
    assert url.drivername == "postgresql+psycopg" and (url.host, url.port) == ("db", 5432)
    assert (url.username, url.password, url.database) == (
        env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"])
    assert database_url.count("${POSTGRES_PASSWORD") == 1
    assert proxy["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert "healthcheck" in db and "healthcheck" in proxy
    assert f"127.0.0.1:{port}" in " ".join(proxy["healthcheck"]["test"])

    # one artifact store: the same volume at the same path, named by the same variable
    store = worker["environment"][ARTIFACTS_ENV]
    assert dashboard["environment"][ARTIFACTS_ENV] == store
    assert worker["volumes"] == dashboard["volumes"] == [f"artifacts:{store}"]
    assert set(compose["volumes"]) == {"pgdata", "artifacts"}

    # the dashboard: on this machine only, on the store, with flags its parser accepts
    assert dashboard["entrypoint"] == ["vae-search", "dashboard"]
    shown = _parse(build_dashboard_parser(), dashboard["command"])
    assert [_interpolate(p) for p in dashboard["ports"]] == [f"127.0.0.1:8080:{shown.port}"]
    assert not any("ports" in s for name, s in services.items() if name != "dashboard")


def test_the_image_runs_every_role():
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    worker = compose["services"]["worker"]
    assert worker["build"]["dockerfile"] == "docker/Dockerfile"
    assert (DOCKER / worker["build"]["context"]).resolve() == REPO
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m", "vae_search.run"]' in dockerfile
    for needed in ("COPY vae_search", "COPY studies", "pip install -e '.[s3]'",
                   "chown worker /artifacts"):
        assert needed in dockerfile


# -- Kubernetes ------------------------------------------------------------------------------

def _manifests() -> dict[tuple[str, str], dict]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def _container(doc: dict) -> dict:
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict, secrets: dict[str, dict]) -> dict[str, str]:
    """The container's environment, secret references resolved."""
    env = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[ref["name"]]["stringData"][ref["key"]]
    return env


def _argv(container: dict) -> list[str]:
    return list(container.get("args", []))


def _service_for(docs: dict, deployment: dict) -> dict:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (service,) = [d for (kind, _), d in docs.items() if kind == "Service"
                  and d["spec"]["selector"].items() <= labels.items()]
    return service


def test_kubernetes_example_wires_workers_proxy_database_and_dashboard():
    docs = _manifests()
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    secrets = {name: d for (kind, name), d in docs.items() if kind == "Secret"}
    job = docs[("Job", "vae-search-workers")]
    proxy = docs[("Deployment", "vae-search-proxy")]
    dashboard = docs[("Deployment", "vae-search-dashboard")]
    postgres = docs[("StatefulSet", "vae-search-postgres")]

    # workers: a Job with parallelism, talking to the proxy's Service
    assert job["spec"]["parallelism"] >= 2
    worker = _container(job)
    worker_env = _env(worker, secrets)
    host, port = StorageURL.parse(worker_env[STORAGE_ENV]).proxy
    proxy_service = _service_for(docs, proxy)
    assert host == proxy_service["metadata"]["name"]
    (service_port,) = proxy_service["spec"]["ports"]
    assert service_port["port"] == port
    args = _parse(build_run_parser(), _argv(worker))
    assert args.trials >= 1 and "--storage" not in _argv(worker)
    assert worker["image"] == _container(proxy)["image"] == _container(dashboard)["image"]

    # the proxy: one replica, serving on the port its Service targets, on PostgreSQL
    assert proxy["spec"]["replicas"] == 1  # it also owns the stale-trial recovery
    proxy_container = _container(proxy)
    assert proxy_container["command"] == ["vae-search", "serve"]
    served = _parse(build_serve_parser(), _argv(proxy_container))
    (named,) = proxy_container["ports"]
    assert named["name"] == service_port["targetPort"] and named["containerPort"] == served.port
    database_url = _env(proxy_container, secrets)[STORAGE_ENV]
    url = sqlalchemy.make_url(database_url)
    assert url.drivername == "postgresql+psycopg"
    postgres_service = _service_for(docs, postgres)
    assert (url.host, url.port) == (postgres_service["metadata"]["name"], 5432)
    pg_env = _env(_container(postgres), secrets)
    assert (url.username, url.password, url.database) == (
        pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"], pg_env["POSTGRES_DB"])

    # the dashboard: the same database URL, a cluster-internal Service
    dashboard_container = _container(dashboard)
    dashboard_env = _env(dashboard_container, secrets)
    assert dashboard_env[STORAGE_ENV] == database_url
    assert _container(dashboard)["command"] == ["vae-search", "dashboard"]
    _parse(build_dashboard_parser(), _argv(dashboard_container))
    assert _service_for(docs, dashboard)["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert not [d for (kind, _), d in docs.items() if kind == "Ingress"]

    # one artifact store: one ReadWriteMany claim, mounted by workers and dashboard where
    # VAE_SEARCH_ARTIFACTS says
    (claim,) = [d for (kind, _), d in docs.items() if kind == "PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for owner, env in ((job, worker_env), (dashboard, dashboard_env)):
        pod = owner["spec"]["template"]["spec"]
        (volume,) = pod["volumes"]
        assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        (mount,) = _container(owner)["volumeMounts"]
        assert mount["name"] == volume["name"] and mount["mountPath"] == env[ARTIFACTS_ENV]
    assert "volumeMounts" not in proxy_container  # the proxy never touches artifacts
