"""The operator files in deploy/ and docs/deployment.md agree with the code.

The compose file cannot run on these machines (no Docker Hub), so nothing would
notice when a setting is renamed, a CLI command changes, or the proxy stops
passing websocket upgrades: an operator would find out in production. These
tests read the files as data and compare them with what the code actually reads
(Settings fields, Reflex's own environment variables, the CLI's argparse).
Each checker is also run against a broken sample, so a checker that accepts
everything fails here too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
NGINX = ROOT / "deploy" / "nginx.conf"
ENV_EXAMPLE = ROOT / "deploy" / ".env.production.example"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOC = ROOT / "docs" / "deployment.md"

APP_IMAGE = "tickwatch"
INTERPOLATION = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)")
ENV_NAME = r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+"
CLI_CALL = re.compile(r"python -m app\.cli((?:[ \t]+[^\s`|;&#)]+)*)")


# --- what the code reads --------------------------------------------------------------


def _reflex_getenv_names() -> set[str]:
    """Names Reflex reads with os.getenv / os.environ.get (GRANIAN_WORKERS among them),
    found in its source so a Reflex upgrade that drops one shows up here."""
    import reflex
    import reflex_base

    pattern = re.compile(r"(?:getenv|environ\.get)\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']")
    names: set[str] = set()
    for package in (reflex, reflex_base):
        for path in Path(package.__file__).parent.rglob("*.py"):
            names.update(pattern.findall(path.read_text(encoding="utf-8", errors="replace")))
    return names


def known_env_names() -> set[str]:
    """Every environment variable our settings or Reflex (config and runtime) read."""
    from reflex_base.config import Config
    from reflex_base.environment import EnvironmentVariables

    from app.api.metrics import MetricsSettings
    from app.config import Settings

    names = {f.upper() for f in Settings.model_fields}
    names |= {f.upper() for f in MetricsSettings.model_fields}
    names |= {n for n in dir(EnvironmentVariables) if n.isupper()}
    names |= {"REFLEX_" + f.upper() for f in Config.__dataclass_fields__ if not f.startswith("_")}
    names |= _reflex_getenv_names()
    return names


@pytest.fixture(scope="module")
def known() -> set[str]:
    return known_env_names()


# --- compose ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict:
    return yaml.safe_load(compose_text)


def interpolated_names(node: object) -> set[str]:
    """``${NAME}`` in any value (parsed, so comments do not count)."""
    if isinstance(node, dict):
        return set().union(*(interpolated_names(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(interpolated_names(v) for v in node))
    return set(INTERPOLATION.findall(node)) if isinstance(node, str) else set()


def app_services(compose: dict) -> dict[str, dict]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if str(svc.get("image", "")).split(":")[0] == APP_IMAGE
    }


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path.name}: not NAME=value: {line!r}"
            assert name not in values, f"{path.name}: {name} set twice"
            values[name] = value
    return values


def unknown_names(names: set[str], known: set[str]) -> set[str]:
    return {n for n in names if n not in known}


def test_official_images_with_healthchecks(compose: dict) -> None:
    services = compose["services"]
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    for name in ("postgres", "redis", "web", "proxy"):
        check = services[name].get("healthcheck", {})
        assert check.get("test"), f"{name} has no healthcheck"
    assert "pg_isready" in str(services["postgres"]["healthcheck"]["test"])
    assert "ping" in str(services["redis"]["healthcheck"]["test"])
    web_check = str(services["web"]["healthcheck"]["test"])
    assert "/_health" in web_check and "/api/health" in web_check
    assert any("/var/lib/postgresql/data" in v for v in services["postgres"]["volumes"])
    assert "pgdata" in compose["volumes"]


def test_start_order_uses_conditions(compose: dict) -> None:
    services = compose["services"]
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits on {dep}'s health"
    assert services["migrate"]["command"] == ["python", "-m", "app.cli", "migrate"]
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "engine"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["redis"]["condition"] == "service_healthy"
    assert services["engine"]["command"] == ["python", "-m", "app.runtime"]
    # app.serve, not plain `reflex run`: a crashed worker must not stop the server
    assert services["web"]["command"][:3] == ["python", "-m", "app.serve"]
    assert services["proxy"]["depends_on"]["web"]["condition"] == "service_healthy"


def test_compose_sets_only_variables_the_code_reads(compose: dict, known: set[str]) -> None:
    services = app_services(compose)
    assert {"migrate", "web", "engine", "ops"} <= set(services)
    for name, svc in services.items():
        assert not unknown_names(set(env_of(svc)), known), name
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert svc["env_file"] == ENV_EXAMPLE.name.removesuffix(".example")


def test_env_example_names_are_read_or_interpolated(compose: dict, known: set[str]) -> None:
    example = read_env_file(ENV_EXAMPLE)
    interpolated = interpolated_names(compose)
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD"} <= interpolated
    assert not unknown_names(set(example), known | interpolated)
    # compose stops on an unset ${NAME:?}; the operator must find each one in the example
    assert interpolated <= set(example), interpolated - set(example)


def _settings_from(env: dict[str, str]) -> object:
    from app.config import Settings

    fields = set(Settings.model_fields)
    values = {k.lower(): v for k, v in env.items() if k.lower() in fields}
    return Settings(_env_file=None, **values)


def test_compose_and_example_values_are_valid_settings(compose: dict) -> None:
    """A value the code would refuse (LEADER_LOCK=local, RUNNER_ENABLED=no-thanks) is
    caught here rather than at a production start."""
    example = read_env_file(ENV_EXAMPLE)
    filled = {
        k: ("x" + k.lower() if v == "" and k in ("POSTGRES_PASSWORD", "REDIS_PASSWORD") else v)
        for k, v in example.items()
    }

    def interpolate(value: str) -> str:
        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2) or ""
            return filled.get(name) or default.removeprefix(":-").removeprefix("-")

        return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)((?::?[-?])[^}]*)?\}", sub, value)

    for name, svc in app_services(compose).items():
        env = {k: interpolate(v) for k, v in env_of(svc).items()}
        settings = _settings_from({**example, **env})
        assert settings.database_url.startswith("postgresql+psycopg://"), name
        if name in ("web", "engine"):
            assert env["REFLEX_REDIS_URL"].startswith("redis://"), name
            assert settings.vault_keys_file, name
            assert settings.leader_lock != "none", name
        workers = int(env.get("GRANIAN_WORKERS", "1"))
        if workers > 1:
            # several workers without Reflex's Redis state manager lose tabs' state
            assert env.get("REFLEX_REDIS_URL"), name
            # several runner-enabled workers need a real lock, or each runs the engine
            assert not settings.runner_enabled or settings.leader_lock != "none", name


def test_dockerfile_sets_only_known_reflex_variables(known: set[str]) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    names = set(re.findall(r"\b(REFLEX_[A-Z0-9_]+)=", text))
    assert names, "the Dockerfile configures Reflex for an offline start"
    assert not unknown_names(names, known)
    for needed in ("app", "engines", "brokers", "notifiers", "alembic", "assets", "reflex.lock"):
        assert re.search(rf"^COPY {re.escape(needed)} ", text, re.M), needed
    assert not re.search(r"^COPY \. ", text, re.M), "copies .env and data/ into the image"


# --- nginx --------------------------------------------------------------------------------


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive] | None = None
    children: list[Directive] = field(default_factory=list)


def parse_nginx(text: str) -> list[Directive]:
    """Enough of nginx's grammar for our file: directives, blocks, quotes, comments."""
    tokens = re.findall(r"\"(?:\\.|[^\"])*\"|'(?:\\.|[^'])*'|[{};]|[^\s{};\"']+", _strip(text))
    stack: list[list[Directive]] = [[]]
    words: list[str] = []
    for tok in tokens:
        if tok == ";":
            assert words, "empty directive"
            stack[-1].append(Directive(words[0], words[1:]))
            words = []
        elif tok == "{":
            node = Directive(words[0], words[1:], [])
            stack[-1].append(node)
            assert node.block is not None
            stack.append(node.block)
            words = []
        elif tok == "}":
            assert not words and len(stack) > 1, "unbalanced braces"
            stack.pop()
        else:
            words.append(tok.strip("\"'") if tok[0] in "\"'" else tok)
    assert len(stack) == 1 and not words, "unterminated block or directive"
    return stack[0]


def _strip(text: str) -> str:
    return "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines())


def find(nodes: list[Directive], name: str) -> list[Directive]:
    return [n for n in nodes if n.name == name]


def headers(location: Directive, server: Directive) -> dict[str, str]:
    """nginx semantics: a location with any proxy_set_header inherits none of the server's."""
    own = find(location.block or [], "proxy_set_header")
    chosen = own or find(server.block or [], "proxy_set_header")
    return {d.args[0].lower(): " ".join(d.args[1:]) for d in chosen}


def route(server: Directive, path: str) -> Directive:
    """The location nginx picks for a path: exact match, else the longest prefix."""
    locations = find(server.block or [], "location")
    for loc in locations:
        if loc.args[0] == "=" and loc.args[1] == path:
            return loc
    prefixes = [loc for loc in locations if len(loc.args) == 1 and path.startswith(loc.args[0])]
    assert prefixes, f"no location serves {path}"
    return max(prefixes, key=lambda loc: len(loc.args[0]))


def tls_server(conf: list[Directive]) -> Directive:
    servers = find(conf, "server")
    tls = [s for s in servers if any("ssl" in d.args for d in find(s.block or [], "listen"))]
    assert len(tls) == 1, "one https server block"
    return tls[0]


def websocket_problems(conf: list[Directive]) -> list[str]:
    server = tls_server(conf)
    loc = route(server, "/_event")
    body = loc.block or []
    problems = []
    if not find(body, "proxy_pass"):
        problems.append("/_event is not proxied")
    version = find(body, "proxy_http_version") or find(server.block or [], "proxy_http_version")
    if not version or version[-1].args != ["1.1"]:
        problems.append("websockets need proxy_http_version 1.1")
    hdrs = headers(loc, server)
    if hdrs.get("upgrade") != "$http_upgrade":
        problems.append("/_event does not pass Upgrade")
    connection = hdrs.get("connection", "")
    if connection == "$connection_upgrade":
        maps = [m for m in find(conf, "map") if m.args == ["$http_upgrade", "$connection_upgrade"]]
        if not maps:
            problems.append("$connection_upgrade is never defined")
    elif connection.lower() != "upgrade":
        problems.append("/_event does not pass Connection: upgrade")
    return problems


def forwarding_problems(conf: list[Directive]) -> list[str]:
    server = tls_server(conf)
    problems = []
    for path in ("/", "/_event", "/auth/login", "/auth/callback/google", "/api/health"):
        loc = route(server, path)
        if not find(loc.block or [], "proxy_pass"):
            problems.append(f"{path} is not proxied to the app")
            continue
        hdrs = headers(loc, server)
        if hdrs.get("x-forwarded-proto") != "$scheme":
            problems.append(f"{path} loses X-Forwarded-Proto (Secure cookie, HSTS)")
        if "host" not in hdrs or "x-forwarded-host" not in hdrs:
            problems.append(f"{path} loses the host (same-origin check)")
    metrics = route(server, "/metrics")
    if find(metrics.block or [], "proxy_pass") or not any(
        d.args == ["all"] for d in find(metrics.block or [], "deny")
    ):
        problems.append("/metrics is reachable from the public side")
    return problems


@pytest.fixture(scope="module")
def nginx() -> list[Directive]:
    return parse_nginx(NGINX.read_text(encoding="utf-8"))


def test_nginx_passes_websocket_upgrades(nginx: list[Directive]) -> None:
    assert websocket_problems(nginx) == []


def test_nginx_forwards_app_routes_and_keeps_metrics_inside(nginx: list[Directive]) -> None:
    assert forwarding_problems(nginx) == []


def test_nginx_reaches_the_web_service(nginx: list[Directive], compose: dict) -> None:
    upstreams = {u.args[0]: u for u in find(nginx, "upstream")}
    targets = {p.args[0] for p in _walk(nginx) if p.name == "proxy_pass"}
    assert targets == {f"http://{name}" for name in upstreams}
    servers = {s.args[0] for u in upstreams.values() for s in find(u.block or [], "server")}
    web = compose["services"]["web"]
    assert servers == {f"web:{port}" for port in web["expose"]}
    assert "3000" in web["command"]
    proxy_mounts = compose["services"]["proxy"]["volumes"]
    assert f"./{NGINX.name}:/etc/nginx/conf.d/default.conf:ro" in proxy_mounts
    redirect = [
        s for s in find(nginx, "server") if any(d.args == ["80"] for d in find(s.block, "listen"))
    ]
    assert redirect and any("https://" in " ".join(r.args) for r in _walk(redirect))


def _walk(nodes: list[Directive]) -> list[Directive]:
    out: list[Directive] = []
    for n in nodes:
        out.append(n)
        out.extend(_walk(n.block or []))
    return out


BROKEN_NGINX = """
upstream app { server web:3000; }
server {
    listen 443 ssl;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-Host $host;
    location /_event { proxy_pass http://app; proxy_set_header Upgrade $http_upgrade; }
    location / { proxy_pass http://app; }
}
"""


def test_nginx_checks_catch_a_broken_config() -> None:
    conf = parse_nginx(BROKEN_NGINX)
    problems = websocket_problems(conf)
    assert "websockets need proxy_http_version 1.1" in problems
    assert "/_event does not pass Connection: upgrade" in problems
    forwarding = forwarding_problems(conf)
    # /_event's own header drops the server's, exactly as nginx does
    assert "/_event loses X-Forwarded-Proto (Secure cookie, HSTS)" in forwarding
    assert "/metrics is reachable from the public side" in forwarding
    assert not any(p.startswith("/api/health") for p in forwarding)


# --- the documentation ----------------------------------------------------------------------


def cli_invocations(text: str) -> list[list[str]]:
    return [m.group(1).split() for m in CLI_CALL.finditer(text)]


def cli_problems(invocation: list[str]) -> list[str]:
    """Asks the real argparse: the subcommand exists and knows every option used."""
    from app.cli import main

    if not invocation:
        return []  # "python -m app.cli" alone, in prose
    cmd, options = invocation[0], [a.split("=")[0] for a in invocation if a.startswith("--")]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([cmd, "--help"])
        except SystemExit as exc:
            code = exc.code
        else:
            code = None
    if code != 0:
        return [f"{cmd} is not an app.cli command"]
    return [
        f"{cmd} has no option {o}" for o in options if o != "--help" and o not in out.getvalue()
    ]


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_doc_says_it_was_not_run_here(doc: str) -> None:
    opening = doc[:1200]
    assert "Docker Hub" in opening and "Not run here" in opening


def test_every_cli_command_in_the_docs_exists(doc: str, compose_text: str) -> None:
    calls = cli_invocations(doc) + cli_invocations(ENV_EXAMPLE.read_text(encoding="utf-8"))
    commands = {c[0] for c in calls if c}
    assert {"migrate", "rotate-keys", "set-role"} <= commands
    assert any("--drop-key" in c for c in calls)
    compose_calls = re.findall(r'"python", "-m", "app\.cli", "([^"]+)"', compose_text)
    calls += [[c] for c in compose_calls]
    problems = [p for call in calls for p in cli_problems(call)]
    assert problems == []


def test_cli_check_catches_a_wrong_command() -> None:
    assert cli_problems(["rotate-key"]) == ["rotate-key is not an app.cli command"]
    assert cli_problems(["rotate-keys", "--drop-keys", "K"]) == [
        "rotate-keys has no option --drop-keys"
    ]
    assert cli_problems(["rotate-keys", "--batch-size", "500", "--drop-key", "K"]) == []


def test_modules_the_docs_run_exist(doc: str) -> None:
    modules = set(re.findall(r"python -m (app\.[a-z_.]+)", doc))
    assert "app.runtime" in modules
    for module in modules:
        spec = importlib.util.find_spec(module)
        assert spec is not None, module
        if spec.submodule_search_locations is not None:  # a package: needs __main__
            assert importlib.util.find_spec(module + ".__main__") is not None, module


def test_variables_named_in_the_docs_exist(doc: str, compose: dict, known: set[str]) -> None:
    interpolated = interpolated_names(compose)
    named = set(re.findall(rf"`({ENV_NAME})`", doc)) | set(re.findall(rf"\b({ENV_NAME})=", doc))
    assert {"DATABASE_URL", "REFLEX_REDIS_URL", "GRANIAN_WORKERS", "LEADER_LOCK"} <= named
    assert {"VAULT_KEYS", "METRICS_TOKEN", "APP_BASE_URL", "RUNNER_ENABLED"} <= named
    assert unknown_names(named, known | interpolated) == set()


def test_unknown_variables_are_reported(known: set[str]) -> None:
    assert unknown_names({"LEADER_LOCK", "GRANIAN_WORKERS", "LEADER_LOCKS"}, known) == {
        "LEADER_LOCKS"
    }
