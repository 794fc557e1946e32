"""`stackcheck init`: compose files (the design docs' and edge cases written here) become stack
files that load, with every compose key the stack file cannot carry listed by its key path."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from stackcheck import cli, compose, images, stackfile
from stackcheck.compliance.model import Area, Policy
from stackcheck.errors import StackFileError
from stackcheck.stackfile import Readiness, StackSpec

DATA = Path(__file__).parent / "data" / "compose"


def copy(name: str, tmp_path: Path, into: str = "") -> Path:
    """A compose file (or folder, for envs/) in tmp_path, with the build contexts and config files
    it names created next to it, as they are in the team's own repository."""
    target = tmp_path / into
    target.mkdir(parents=True, exist_ok=True)
    source = DATA / name
    if source.is_dir():
        shutil.copytree(source, target / name)
        path = target / name / "docker-compose.yml"
    else:
        path = Path(shutil.copy(source, target / name))
    data = next(d for d in yaml.safe_load_all(path.read_text()) if d and "services" in d)
    for svc in data["services"].values():
        build = svc.get("build")
        spec = {"context": build} if isinstance(build, str) else build or {}
        if spec and "://" not in str(spec.get("context", ".")):
            dockerfile = path.parent / spec.get("context", ".") / spec.get("dockerfile", "Dockerfile")
            dockerfile.parent.mkdir(parents=True, exist_ok=True)
            if not dockerfile.exists():
                dockerfile.write_text("FROM scratch\n")
    for config in (data.get("configs") or {}).values():
        if "file" in config:
            (path.parent / config["file"]).parent.mkdir(parents=True, exist_ok=True)
            (path.parent / config["file"]).write_text("events {}\n")
    return path


def init(path: Path, image_map: dict[str, str] | None = None) -> tuple[compose.Translation, StackSpec, Policy]:
    """Translate, write beside the compose file, and load both outputs as stackcheck does."""
    translation = compose.translate(path, image_map)
    stack, policy = compose.write(translation, path.parent)
    spec = stackfile.load(stack)
    assert spec.policy == policy.resolve()
    return translation, spec, Policy.load(policy)


def notes(translation: compose.Translation) -> dict[str, str]:
    return {u.key_path: u.reason for u in translation.untranslated}


def listed_in_stack_file(translation: compose.Translation) -> None:
    tail = translation.stack_toml.split("# -- not translated", 1)[1]
    for item in translation.untranslated:
        assert f"# {item.key_path}: " in tail


# -- the design docs' compose files ------------------------------------------------------------

DOC_NOTES = {
    "doc000-production.yml": [
        "version", "x-common-variables", "networks.prompt-network.ipam",
        "services.nginx.ports[0]", "services.nginx.container_name",
        "services.frontend.build.target", "services.frontend.build.cache_from",
        "services.frontend.deploy.resources.reservations.memory", "services.backend.depends_on.redis",
        "services.backend.environment.DATABASE_URL", "services.postgres.ports[0]",
        "services.redis-master.command",
        "services.ollama.deploy.resources.reservations.devices[0]", "services.ollama.restart",
    ],
    "doc002-dev.yml": [
        "services.backend.env_file[0]", "services.backend.ports[0]",
        "services.frontend-react.ports[0]",
    ],
    "doc002-prod.yml": ["services.postgres.profiles", "services.backend.env_file[0]", "services.nginx.ports[1]"],
    "doc002-monitoring.yml": ["services.promtail.networks.chatbot-network", "services.grafana.image"],
    "doc002-secrets.yml": ["secrets.openai_api_key", "secrets.db_password", "services.backend.image"],
    "doc002-scale.yml": ["services.backend.deploy.update_config", "services.backend.deploy.restart_policy"],
    "doc002-db-replicas.yml": ["version"],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(DOC_NOTES))
def test_design_doc_compose_files_become_stack_files_that_load(name: str, tmp_path: Path) -> None:
    into = "docker" if name == "doc002-dev.yml" else ""  # its contexts are ../backend etc.
    translation, spec, _ = init(copy(name, tmp_path, into), None)
    assert set(DOC_NOTES[name]) <= set(notes(translation)), sorted(notes(translation))
    listed_in_stack_file(translation)
    assert spec.services


def test_doc000_production_stack(tmp_path: Path) -> None:
    translation, spec, _ = init(copy("doc000-production.yml", tmp_path), None)
    assert list(spec.services) == [
        "nginx", "frontend", "backend", "postgres", "postgres-replica", "redis-master", "ollama",
    ]  # fmt: skip
    nginx, backend = spec.services["nginx"], spec.services["backend"]
    # nginx:1.25-alpine is the catalog nginx, which listens on 8080/8443; https is preferred.
    assert (nginx.image, nginx.ports, spec.entrypoint_url) == ("nginx", (8080, 8443), "https://nginx:8443")
    assert spec.health_path == "/api/health"  # frontend's healthcheck URL: the shortest health path
    assert nginx.depends_on == ("frontend", "backend")
    assert f"{tmp_path}/nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx.mounts
    assert (spec.services["frontend"].replicas, spec.services["frontend"].memory) == (3, "512m")
    assert (backend.replicas, backend.memory, backend.cpus) == (5, "1g", 2.0)
    assert backend.depends_on == ("postgres",)  # `redis` names no service: dropped and listed
    assert spec.services["ollama"].memory == "8g"
    assert backend.env["JWT_SECRET"] == "${secret.jwt-secret}"
    assert backend.env["PORT"] == "3001"
    assert spec.services["postgres"].env["POSTGRES_PASSWORD"] == "${secret.postgres-password}"
    assert spec.services["postgres-replica"].env["POSTGRES_PASSWORD"] == "${secret.postgres-replication-password}"
    assert set(spec.secrets) == {"jwt-secret", "postgres-password", "postgres-replication-password"}
    assert spec.images["frontend"].context == tmp_path / "frontend"
    assert spec.images["frontend"].args == {"BUILDKIT_INLINE_CACHE": "1"}
    assert spec.services["ollama"].image == "ollama"
    if "ollama" in images.Catalog.load().images:  # the catalog's own build stands in
        assert "ollama" not in spec.images
    else:
        assert spec.images["ollama"].ref == "ollama/ollama:latest"
    why = notes(translation)
    assert "host port 5432" in why["services.postgres.ports[0]"]
    assert "0.0.0.0" in why["services.postgres.ports[0]"]
    assert 'gpu = "optional"' in why["services.ollama.deploy.resources.reservations.devices[0]"]
    assert "$REDIS_PASSWORD" in why["services.redis-master.command"]
    assert "# gpu: compose reserves an nvidia GPU request (count 1" in translation.stack_toml
    assert 'entrypoint = "https://nginx:8443"  # check:' in translation.stack_toml
    # Named volumes: [volumes.NAME] (driver local is what a stack volume is: no note), mounted by name.
    assert set(spec.volumes) == {"postgres-data", "postgres-replica-data", "redis-data", "ollama-models", "nginx-cache"}
    assert [(m.volume, m.path, m.read_only) for m in spec.services["postgres"].volumes] == [
        ("postgres-data", "/var/lib/postgresql/data", False)
    ]
    assert [m.volume for m in nginx.volumes] == ["nginx-cache"]
    unused = {k: v for k, v in why.items() if k.startswith("volumes")}  # declared for services not in this file
    assert unused == {
        f"volumes.{n}_data": "declared but no service mounts it: left out" for n in ("prometheus", "grafana", "jaeger")
    }


def test_doc002_dev_stack_has_relative_contexts_and_no_https_edge(tmp_path: Path) -> None:
    translation, spec, _ = init(copy("doc002-dev.yml", tmp_path, "docker"), None)
    assert spec.images["backend"].context == tmp_path / "backend"
    assert spec.images["backend"].dockerfile == "Dockerfile.dev"
    assert 'context = "../backend"' in translation.stack_toml  # relative to the stack file
    assert spec.entrypoint_url is None  # no service publishes 80/443/8080/8443
    assert '# entrypoint = "http://backend:8000"  # check:' in translation.stack_toml
    assert spec.services["backend"].command == (
        "uvicorn", "app.main:app", "--reload", "--host", "0.0.0.0", "--port", "8000",
    )  # fmt: skip
    assert spec.services["backend"].ready is Readiness.RUNNING  # no healthcheck, FROM scratch has none


def test_registry_images_outside_the_catalog_are_used_as_is_and_listed(tmp_path: Path) -> None:
    translation, spec, _ = init(copy("doc002-monitoring.yml", tmp_path))
    assert spec.images["grafana"].ref == "grafana/grafana:latest"
    why = notes(translation)["services.grafana.image"]
    assert "needs a registry" in why
    assert "--image-map grafana/grafana:latest=CATALOG_IMAGE" in why
    assert "unpinned" in why


def test_doc002_secrets_become_generated_files(tmp_path: Path) -> None:
    _, spec, _ = init(copy("doc002-secrets.yml", tmp_path), None)
    backend = spec.services["backend"]
    assert {f.path: f.template for f in backend.files} == {
        "/run/secrets/openai_api_key": "${secret.openai-api-key}",
        "/run/secrets/db_password": "${secret.db-password}",
    }
    assert backend.env["OPENAI_API_KEY_FILE"] == "/run/secrets/openai_api_key"  # a path, not a secret
    assert spec.secrets == ("openai-api-key", "db-password")


def test_doc002_configs_become_template_files(tmp_path: Path) -> None:
    _, spec, _ = init(copy("doc002-scale.yml", tmp_path), None)
    (config,) = spec.services["nginx"].files
    assert (config.path, config.source) == ("/etc/nginx/nginx.conf", tmp_path / "nginx/nginx-load-balanced.conf")
    assert spec.services["backend"].replicas == 3


def test_doc002_replicas_share_one_secret_on_the_default_network(tmp_path: Path) -> None:
    _, spec, _ = init(copy("doc002-db-replicas.yml", tmp_path), None)
    assert spec.secrets == ("repl-password",)
    assert {s.env["POSTGRES_REPLICATION_PASSWORD"] for s in spec.services.values()} == {"${secret.repl-password}"}
    assert set(spec.networks) == {"default"}
    assert spec.services["postgres-replica"].depends_on == ("postgres-primary",)


@pytest.mark.parametrize(
    ("name", "problem", "fix"),
    [
        ("doc000-network-security.yml", "defines no services", "top-level `services:` mapping"),
        ("doc000-monitoring.yml", "defines no services", "nest the service definitions (prometheus, grafana)"),
        # The doc appends a vercel.json after the YAML.
        ("doc002-hybrid.yml", r"not valid YAML at line 23, column 3", "fix the YAML"),
        ("edge-malformed.yml", r"not valid YAML at line 4, column 1: found character '\\t'", "fix the YAML"),
    ],
)
def test_what_is_not_a_compose_file_is_one_clear_error(name: str, problem: str, fix: str) -> None:
    with pytest.raises(compose.ComposeError, match=problem) as err:
        compose.translate(DATA / name)
    assert fix in err.value.fix
    assert str(DATA / name) in err.value.problem


def test_a_missing_compose_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(compose.ComposeError, match=r"cannot read compose file .*nope\.yml: No such file") as err:
        compose.translate(tmp_path / "nope.yml")
    assert "--from-compose" in err.value.fix


# -- edge cases written for these tests --------------------------------------------------------


def test_build_contexts_dockerfiles_args_and_healthchecks(tmp_path: Path) -> None:
    path = copy("edge-build.yml", tmp_path)
    # api's image reports health; worker's target stage has none.
    (tmp_path / "api/Dockerfile").write_text(
        'FROM python:3.11-slim AS base\nRUN true\nHEALTHCHECK --interval=2s CMD ["/bin/true"]\n'
    )
    (tmp_path / "worker/docker/Worker.Dockerfile").write_text(
        "FROM scratch AS build\nHEALTHCHECK CMD true\nFROM scratch AS runtime\nHEALTHCHECK NONE\n"
    )
    translation, spec, _ = init(path)
    why = notes(translation)
    assert spec.name == "edge-build"
    assert spec.images["api"].context == tmp_path / "api"
    assert spec.services["api"].ready is Readiness.HEALTHCHECK  # from the Dockerfile's HEALTHCHECK
    assert "FROM python:3.11-slim, which needs a registry" in why["services.api.build.context"]
    assert (spec.entrypoint_url, spec.services["api"].ports) == ("https://api:8443", (8443,))
    assert "host port 8443" in why["services.api.ports[0]"]
    assert "0.0.0.0" not in why["services.api.ports[0]"]
    worker = spec.images["worker"]
    assert (worker.context, worker.dockerfile, worker.args) == (
        tmp_path / "worker", "docker/Worker.Dockerfile", {"MODE": "batch"},
    )  # fmt: skip
    assert "shell" in why["services.worker.build.args.FROM_SHELL"]
    assert "last stage" in why["services.worker.build.target"]
    assert spec.services["worker"].ready is Readiness.RUNNING  # compose has a test, the image has no HEALTHCHECK
    assert "HEALTHCHECK CMD curl -fsS http://localhost:9000/healthz" in why["services.worker.healthcheck"]
    assert "(interval 10s)" in why["services.worker.healthcheck"]  # compose's timing is named too
    assert spec.health_path == "/healthz"  # from worker's healthcheck URL
    assert spec.images["remote"].ref == "remote:local"
    assert "remote context" in why["services.remote.build.context"]


def test_a_missing_build_context_is_listed_and_named_by_the_stack_file(tmp_path: Path) -> None:
    path = tmp_path / "docker-compose.yml"
    path.write_text("services:\n  app:\n    build: ./app\n")
    translation = compose.translate(path)
    assert "app/Dockerfile does not exist here" in notes(translation)["services.app.build.context"]
    stack, _ = compose.write(translation, tmp_path)
    with pytest.raises(StackFileError, match=r"\[images\.app\.context\] .*app/Dockerfile does not exist"):
        stackfile.load(stack)


def test_environment_env_files_dotenv_and_secrets(tmp_path: Path) -> None:
    translation, spec, _ = init(copy("envs", tmp_path))
    app, why = spec.services["app"], notes(translation)
    assert dict(app.env) == {
        "LOG_LEVEL": "debug",  # environment wins over the env file
        "GREETING": "hello world",
        "SECRET_KEY": "${secret.secret-key}",  # a secret-looking key from the env file: never copied
        "PLAIN": "value",
        "API_TOKEN": "${secret.api-token}",
        "DATABASE_URL": "postgresql://app:${secret.db-password}@db:5432/app",
        "IMAGE_TAG": "1.0",  # the default of ${TAG:-1.0}
        "REGION": "${REGION}",
        "FROM_DOTENV": "from-dotenv",  # compose reads .env beside the compose file
        "PRICE": "$5",
        "DEBUG": "true",
        "WORKERS": "4",
        "SSL_KEY_FILE": "/run/secrets/key",
    }
    assert "default '1.0' is written" in why["services.app.environment.IMAGE_TAG"]
    assert "no host variables" in why["services.app.environment.REGION"]
    assert "shell" in why["services.app.environment.EMPTY"]
    assert "optional.env does not exist here" in why["services.app.env_file[1]"]
    assert spec.services["db"].env["POSTGRES_PASSWORD"] == "${secret.db-password}"  # the same secret as app's URL
    assert {f.path: f.template for f in app.files} == {
        "/run/secrets/db_password": "${secret.db-password}",
        "/run/secrets/app.key": "${secret.tls-key}",
    }
    assert "the file ./db_password.txt" in why["secrets.db_password"]
    assert "services.app.secrets[1].mode" in why
    assert spec.secrets == ("secret-key", "api-token", "db-password", "tls-key")
    assert (app.user, app.image, app.ready) == ("1000", "python", Readiness.RUNNING)  # catalog python: no HEALTHCHECK
    assert spec.services["db"].ready is Readiness.HEALTHCHECK  # the catalog postgres has one


def test_networks_aliases_renames_and_dependency_conditions(tmp_path: Path) -> None:
    translation, spec, policy = init(copy("edge-networks.yml", tmp_path))
    why = notes(translation)
    assert {n: net.internal for n, net in spec.networks.items()} == {
        "front": False, "back": True, "data": True, "outside": False,
    }  # fmt: skip
    proxy = spec.services["edge-proxy"]  # edge_proxy is no stack-file name; it stays an alias
    assert dict(proxy.networks) == {"front": ("www", "edge_proxy"), "back": ("edge_proxy",)}
    assert spec.entrypoint_url == "https://edge-proxy:8443"
    assert proxy.depends_on == ("api", "migrate")
    assert "not to exit" in why["services.edge_proxy.depends_on.migrate.condition"]
    assert "services.edge_proxy.networks.back.ipv4_address" in why
    assert "networks.data.driver_opts" in why
    assert "networks.outside.external" in why
    # One image entry for the two services that run it; pinned, so no "unpinned" note.
    assert spec.services["api"].image == spec.services["migrate"].image == "api"
    assert spec.images["api"].ref == "registry.example.com/team/api:2.1"
    assert "unpinned" not in why["services.api.image"]
    assert "tls-postgres = " in translation.policy_toml
    assert "redis-auth-required = " not in translation.policy_toml
    assert policy.disabled == {}  # every suggestion is commented out: the user decides


def test_gpu_requests_limits_ports_volumes_and_unknown_keys(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    translation, spec, _ = init(copy("edge-resources.yml", tmp_path))
    why = notes(translation)
    llm, legacy = spec.services["llm"], spec.services["legacy"]
    assert (llm.replicas, llm.memory, llm.cpus) == (20, "1536m", 0.5)  # cpus merged from a YAML anchor
    assert "25 replicas" in why["services.llm.deploy.replicas"]
    assert 'gpu = "optional"' in why["services.llm.deploy.resources.reservations.devices[0]"]
    assert 'gpu = "optional"' in why["services.llm.runtime"]
    for key in ("limits.pids", "reservations.memory"):
        assert f"services.llm.deploy.resources.{key}" in why
    assert "services.llm.deploy.placement" in why
    assert (legacy.memory, legacy.cpus, legacy.read_only, legacy.privileged) == ("1g", 1.5, True, True)
    assert legacy.tmpfs == ("/tmp", "/run", "/cache")
    assert "size=64m" in why["services.legacy.tmpfs"]
    assert legacy.mounts == ("/var/run/docker.sock:/var/run/docker.sock", f"{tmp_path}/data:/data:ro")
    assert "z" in why["services.legacy.volumes[2]"]
    assert "anonymous volume at /scratch" in why["services.legacy.volumes[3]"]
    assert (legacy.cap_drop, legacy.cap_add) == (("ALL",), ("NET_BIND_SERVICE",))
    assert dict(legacy.sysctls) == {"net.core.somaxconn": "1024"}
    assert "services.legacy.sysctls.kernel.shm_rmid_forced" in why
    assert legacy.command == ("echo", "hello world", "&&", "sleep", "1")
    assert "ENTRYPOINT" in why["services.legacy.entrypoint"]
    assert legacy.ready is Readiness.RUNNING
    assert "disabled" in why["services.legacy.healthcheck"]
    assert legacy.ports == (9000, 7000, 7001, 7002, 9100)
    assert "TCP ports only" in why["services.legacy.ports[0]"]
    assert "0.0.0.0" in why["services.legacy.ports[1]"]
    assert "host port 9000" in why["services.legacy.ports[1]"]
    for key in ("services.legacy.ulimits", "services.legacy.frobnicate", "bogus_top", "x-anchors"):
        assert key in why
    assert "no such key" in why["services.legacy.frobnicate"]
    listed_in_stack_file(translation)


def test_more_documents_and_duplicate_keys_are_listed(tmp_path: Path) -> None:
    translation, spec, _ = init(copy("edge-multidoc.yml", tmp_path))
    why = notes(translation)
    assert list(spec.services) == ["web"]
    assert "one document" in why["document 2"]
    assert "'image' appears twice" in why["line 5"]


def test_image_map_overrides_the_image_choice(tmp_path: Path) -> None:
    path = copy("doc000-production.yml", tmp_path)
    image_map = compose.parse_image_map(["ollama/ollama=python", "postgres:16-alpine=registry.local/pg:16.4"])
    translation, spec, _ = init(path, image_map)
    assert spec.services["ollama"].image == "python"
    assert spec.services["postgres"].image == spec.services["postgres-replica"].image == "pg"
    assert spec.images["pg"].ref == "registry.local/pg:16.4"
    why = notes(translation)
    assert "services.ollama.image" not in why
    assert "services.postgres.image" not in why
    with pytest.raises(compose.ComposeError, match="'nonsense' is neither a catalog image nor an image reference"):
        compose.translate(path, {"postgres:16-alpine": "nonsense"})
    with pytest.raises(compose.ComposeError, match="is not COMPOSE_IMAGE=STACKCHECK_IMAGE"):
        compose.parse_image_map(["postgres"])


def test_uncommented_policy_suggestions_load(tmp_path: Path) -> None:
    translation = compose.translate(copy("doc002-secrets.yml", tmp_path))
    lines = translation.policy_toml.splitlines()
    start = lines.index("# [disabled]")
    block = [line.removeprefix("# ") for line in lines[start:]]
    path = tmp_path / "uncommented.toml"
    path.write_text("\n".join(block) + "\n")
    disabled = Policy.load(path).disabled
    assert disabled["tls-postgres"] == "no postgres service in this stack"
    assert disabled["headers-hsts"] == "the stack has no HTTP entrypoint"  # nothing publishes a port


# -- `stackcheck init` without a compose file, the writer, the CLI ----------------------------


def test_starter_stack_and_policy_load(tmp_path: Path) -> None:
    out = tmp_path / "my_stack"
    stack, policy = compose.write(compose.starter(out), out)
    spec = stackfile.load(stack)
    nginx = spec.services["nginx"]
    assert (spec.name, spec.entrypoint_url, spec.health_path) == ("my-stack", "https://nginx:8443", "/healthz")
    assert {f.tls for f in nginx.files} == {"cert", "key", None}
    assert (nginx.read_only, nginx.cap_drop, nginx.memory) == (True, ("ALL",), "128m")
    # The starter's policy is active: its subjects are known, and so are the rules that cannot apply.
    loaded, default = Policy.load(policy), Policy.load()
    assert loaded.disabled["tls-postgres"] == "no postgres service in this stack"
    assert "redis-auth-required" in loaded.disabled
    assert loaded.http.routes == ("/", "/healthz")
    for rule in default.rules.values():  # an empty health path of the default gets the starter's
        if rule.area is Area.HEALTH and rule.params.get("path") == "" and rule.id not in loaded.disabled:
            assert loaded.rules[rule.id].params["path"] == "/healthz"


def test_write_never_overwrites_without_force(tmp_path: Path) -> None:
    compose.write(compose.starter(tmp_path), tmp_path)
    with pytest.raises(compose.ComposeError, match="already exist") as err:
        compose.write(compose.starter(tmp_path), tmp_path)
    assert "--force" in err.value.fix
    compose.write(compose.starter(tmp_path), tmp_path, force=True)


@given(st.text())
def test_toml_strings_round_trip(text: str) -> None:
    assert tomllib.loads(f"value = {compose._toml(text)}")["value"] == text


def test_cli_init_from_compose(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = copy("doc000-production.yml", tmp_path)
    out = tmp_path / "stackcheck"
    args = ["init", "--from-compose", str(path), "--out", str(out), "--image-map", "ollama/ollama:latest=python"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "not translated: services.backend.depends_on.redis: names no service" in printed
    assert f"wrote {out / 'stack.toml'} and {out / 'policy.toml'}" in printed
    spec = stackfile.load(out / "stack.toml")
    assert spec.images["frontend"].context == tmp_path / "frontend"  # relative to --out
    assert spec.services["ollama"].image == "python"
    assert cli.main(args) == 2
    assert "already exist" in capsys.readouterr().err
    assert cli.main([*args, "--force"]) == 0


def test_cli_init_without_compose_and_its_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["init", "--out", str(tmp_path / "new")]) == 0
    stackfile.load(tmp_path / "new" / "stack.toml")
    capsys.readouterr()
    assert cli.main(["init", "--from-compose", str(tmp_path / "missing.yml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stackcheck: error: cannot read compose file")
    assert "Traceback" not in err
    # Written, but a build context is missing: said, with a non-zero exit.
    (tmp_path / "c.yml").write_text("services:\n  app:\n    build: ./app\n")
    assert cli.main(["init", "--from-compose", str(tmp_path / "c.yml")]) == 1
    assert "does not load yet" in capsys.readouterr().out


def test_named_volumes_become_stack_volumes_and_what_cannot_is_listed(tmp_path: Path) -> None:
    compose_file = tmp_path / "docker-compose.yml"
    compose_file.write_text(
        yaml.safe_dump({
            "services": {
                "db": {"image": "postgres:16.4", "volumes": [
                    "db_data:/var/lib/postgresql/data",
                    "backups:/backups:ro",
                    {"type": "volume", "source": "cache", "target": "/cache", "volume": {"nocopy": True}},
                    "undeclared:/x",
                    "/anonymous",
                ]},
                "tool": {"image": "postgres:16.4", "volumes": ["backups:/backups:rw,z"]},
            },
            "volumes": {
                "db_data": {"driver": "local"}, "backups": None, "cache": {"external": True},
                "fast": {"driver": "tmpfs-plugin"},
            },
        })
    )  # fmt: skip
    translation, spec, _ = init(compose_file)
    assert set(spec.volumes) == {"db-data", "backups", "cache"}  # "fast" is mounted by no service
    db, tool = spec.services["db"], spec.services["tool"]
    assert [(m.volume, m.path, m.read_only) for m in db.volumes] == [
        ("db-data", "/var/lib/postgresql/data", False), ("backups", "/backups", True), ("cache", "/cache", False),
    ]  # fmt: skip
    assert [(m.volume, m.read_only) for m in tool.volumes] == [("backups", False)]
    why = notes(translation)
    assert "existing volume" in why["volumes.cache.external"]
    assert "plain local volume" in why["volumes.fast.driver"]
    assert "no service mounts it" in why["volumes.fast"]
    assert "nocopy" in why["services.db.volumes[2]"]
    assert "not declared under the top-level volumes" in why["services.db.volumes[3]"]
    assert "anonymous volume at /anonymous" in why["services.db.volumes[4]"]
    assert "z" in why["services.tool.volumes[0]"]
    assert "volumes.db_data.driver" not in why
    listed_in_stack_file(translation)
