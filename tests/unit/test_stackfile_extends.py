"""A profile extends a base stack file (``[stack] extends``, stackcheck/stackfile.py): the base is
read first, ``[stack] drop`` removes keys of it, the profile is deep-merged over it (tables key by
key, anything else replaced); relative paths resolve against the file that wrote them; a chain
works; a cycle, a missing base, a bad or unknown drop key are each one StackFileError naming the
file, the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackcheck import resources, stackfile
from stackcheck.errors import StackFileError

BASE = """
[stack]
name = "base"
entrypoint = "http://web:8080"
policy = "policy.toml"

[volumes.data]
[volumes.spare]

[services.web]
image = "nginx"
networks = { edge = [] }
ports = [8080]
volumes = ["data:/data", "spare:/spare"]
tmpfs = ["/tmp"]
env = { MODE = "base", KEEP = "yes", "dotted.name" = "x" }
[services.web.files]
"/etc/app.conf" = { template_file = "conf/app.conf" }

[networks.edge]

[workloads.home]
path = "/"

[scenarios.web-kill]
fault = "kill"
target = "web"
hook = "hooks.py:drill"

[disabled]
ratelimit-auth = "no login"
tls-postgres = "no PostgreSQL"
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def base(tmp_path: Path) -> Path:
    folder = tmp_path / "base"
    write(folder / "policy.toml", "")
    write(folder / "conf" / "app.conf", "server {}")
    write(folder / "hooks.py", "def drill(stack, experiment, scenario):\n    pass\n")
    return write(folder / "stack.toml", BASE)


def profile(folder: Path, text: str, name: str = "profile.toml") -> Path:
    return write(folder / name, text)


def test_the_profile_is_merged_over_the_base(base: Path) -> None:
    path = profile(
        base.parent,
        """
[stack]
extends = "stack.toml"
name = "profile"
[services.web]
ports = [8080, 8443]
env = { MODE = "profile" }
[services.extra]
image = "redis"
networks = { edge = [] }
""",
    )
    spec = stackfile.load(path)
    assert (spec.name, spec.path) == ("profile", path)
    assert spec.entrypoint_url == "http://web:8080", "a key the profile leaves alone is the base's"
    web = spec.services["web"]
    assert web.ports == (8080, 8443), "an array replaces the base's"
    assert web.env == {"MODE": "profile", "KEEP": "yes", "dotted.name": "x"}, "tables merge key by key"
    assert web.tmpfs == ("/tmp",)
    assert set(spec.services) == {"web", "extra"}
    assert spec.disabled == {"ratelimit-auth": "no login", "tls-postgres": "no PostgreSQL"}


def test_drop_removes_keys_of_the_base_and_a_dropped_table_can_be_written_anew(base: Path) -> None:
    path = profile(
        base.parent,
        """
[stack]
extends = "stack.toml"
drop = ["volumes.spare", "services.web.env.KEEP", 'services.web.env."dotted.name"', "disabled.tls-postgres",
        "services.web.files"]
[services.web]
volumes = ["data:/data"]
[services.web.files]
"/etc/other.conf" = "inline"
""",
    )
    spec = stackfile.load(path)
    assert set(spec.volumes) == {"data"}
    web = spec.services["web"]
    assert web.env == {"MODE": "base"}
    assert [f.path for f in web.files] == ["/etc/other.conf"], "the dropped table is replaced, not merged"
    assert spec.disabled == {"ratelimit-auth": "no login"}


def test_relative_paths_resolve_against_the_file_that_wrote_them(base: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "profiles" / "deep"
    write(elsewhere / "own-policy.toml", "")
    write(elsewhere / "own.conf", "server {}")
    path = profile(
        elsewhere,
        """
[stack]
extends = "../../base/stack.toml"
[services.web.files]
"/etc/own.conf" = { template_file = "own.conf" }
""",
    )
    spec = stackfile.load(path)
    folder = base.parent.resolve()
    assert spec.policy == folder / "policy.toml"
    sources = {f.path: f.source for f in spec.services["web"].files}
    assert sources == {"/etc/app.conf": folder / "conf" / "app.conf", "/etc/own.conf": elsewhere.resolve() / "own.conf"}
    hook = spec.chaos.scenarios["web-kill"].hook
    assert hook is not None
    assert (hook.file, hook.function) == (folder / "hooks.py", "drill")
    # The profile's own policy is resolved against the profile's folder.
    again = profile(elsewhere, '[stack]\nextends = "../../base/stack.toml"\npolicy = "own-policy.toml"\n', "b.toml")
    assert stackfile.load(again).policy == elsewhere.resolve() / "own-policy.toml"


def test_a_chain_of_extends_works(base: Path) -> None:
    middle = profile(
        base.parent, '[stack]\nextends = "stack.toml"\nname = "middle"\n[services.web]\nports = [8080, 9090]\n'
    )
    top = profile(base.parent / "sub", '[stack]\nextends = "../profile.toml"\n[services.web.env]\nMODE = "top"\n')
    assert middle.name == "profile.toml"
    spec = stackfile.load(top)
    assert spec.name == "middle"
    assert spec.services["web"].env["MODE"] == "top"
    assert spec.services["web"].ports == (8080, 9090)
    assert spec.policy == base.parent.resolve() / "policy.toml", "a path two files down still resolves"


def test_read_returns_the_merged_data_for_variants(base: Path) -> None:
    path = profile(base.parent, '[stack]\nextends = "stack.toml"\nname = "profile"\n')
    data = stackfile.read(path)
    assert "extends" not in data["stack"]
    data["services"]["web"]["env"]["MODE"] = "broken"
    assert stackfile.parse(data, path).services["web"].env["MODE"] == "broken"


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ('[stack]\nextends = "missing.toml"\n', r"\[stack.extends\] .*missing.toml does not exist"),
        ("[stack]\nextends = 3\n", r"\[stack.extends\] must be str"),
        ('[stack]\ndrop = ["volumes.data"]\n', r"\[stack.drop\] removes keys of a base file, but this file extends"),
        ('[stack]\nextends = "stack.toml"\ndrop = ["volumes.nope"]\n', r"has no key volumes.nope"),
        (
            '[stack]\nextends = "stack.toml"\ndrop = ["services.web.env.KEEP.x"]\n',
            r"has no key services.web.env.KEEP.x",
        ),
        ('[stack]\nextends = "stack.toml"\ndrop = ["a..b"]\n', r"'a..b' is not a TOML dotted key"),
        ('[stack]\nextends = "stack.toml"\ndrop = "volumes.data"\n', r"\[stack.drop\] must be list"),
    ],
)
def test_each_mistake_is_one_clear_error(base: Path, text: str, pattern: str) -> None:
    path = profile(base.parent, text)
    with pytest.raises(StackFileError, match=pattern) as info:
        stackfile.load(path)
    assert str(path) in str(info.value), "the error names the file that made the mistake"
    assert info.value.fix


def test_a_cycle_is_named_with_its_files(tmp_path: Path) -> None:
    a = profile(tmp_path, '[stack]\nextends = "b.toml"\n', "a.toml")
    profile(tmp_path, '[stack]\nextends = "a.toml"\n', "b.toml")
    with pytest.raises(StackFileError, match=r"\[stack.extends\] forms a cycle: .*a.toml -> .*b.toml -> .*a.toml"):
        stackfile.load(a)
    itself = profile(tmp_path, '[stack]\nextends = "self.toml"\n', "self.toml")
    with pytest.raises(StackFileError, match="forms a cycle"):
        stackfile.load(itself)


def test_parse_refuses_unresolved_extends(base: Path) -> None:
    with pytest.raises(StackFileError, match=r"(?s)is resolved when the file is read.*stackfile.read"):
        stackfile.parse({"stack": {"name": "x", "extends": "stack.toml"}, "services": {}}, base)


def test_the_chatbot_postgres_profile_extends_the_chatbot() -> None:
    folder = resources.reference_stack().parent.parent / "chatbot"
    base, pg = stackfile.load(folder / "stack.toml"), stackfile.load(folder / "stack-postgres.toml")
    assert pg.name == "chatbot-pg"
    assert set(pg.services) == {*base.services, "postgres"}
    assert "chat-data" not in pg.volumes
    assert "DATABASE_PATH" not in pg.services["api"].env
    assert pg.policy == base.policy
    hook = pg.chaos.scenarios["backup-restore"].hook
    assert hook is not None
    assert hook.file == folder.resolve() / "hooks.py"
    assert not {"tls-postgres", "pg-scram", "pg-no-trust", "pg-ssl", "pg-app-not-superuser"} & set(pg.disabled)
    assert set(pg.services["postgres"].networks) == {"internal", "control"}
