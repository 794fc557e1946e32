"""The tmpfs mount options a service gets: owned by its numeric non-root user (see test_tmpfs)."""

from __future__ import annotations

import pytest

from stackcheck.stack import tmpfs_options


@pytest.mark.parametrize(
    ("user", "options"),
    [
        ("10010:10010", "uid=10010,gid=10010"),
        ("1001", "uid=1001"),
        ("999:docker", "uid=999"),  # a group by name: uid= alone still makes it the user's
        (None, ""),  # the image runs as root
        ("", ""),
        ("0:0", ""),
        ("root", ""),
        ("nginx", ""),  # a name: not resolvable here, Docker's default
    ],
)
def test_a_numeric_non_root_user_owns_the_tmpfs(user: str | None, options: str) -> None:
    assert tmpfs_options(user) == options
