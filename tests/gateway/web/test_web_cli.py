"""``congvu web user add|list|remove`` (the users file) and ``congvu web`` at start."""

from __future__ import annotations

import io
import os
import socket
import stat
from pathlib import Path

import pytest
import structlog

from gateway.cli import main
from gateway.web.users import UserFile, read_users
from policies.reader import ConfigError
from tests.gateway.web.conftest import write_config
from tests.support.console import GIA_HIEP


def run(
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    stdin: str = "",
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    status = main(argv)
    out = capsys.readouterr()
    return status, out.out, out.err


def test_users_are_added_listed_and_removed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user added has an Argon2 hash (never the password) in a file only its owner reads;
    adding again changes the password; a removed user is gone."""
    config = str(write_config(tmp_path))
    add = ["--config", config, "web", "user", "add"]
    status, out, _ = run(
        [*add, "an", "--role", "auditor", "--password-stdin"],
        capsys,
        monkeypatch,
        "mot-mat-khau-dai\n",
    )
    assert status == 0 and "an (auditor) saved" in out
    status, _, _ = run(
        [*add, "giahiep", "--role", "manager", "--unit", GIA_HIEP, "--password-stdin"],
        capsys,
        monkeypatch,
        "mat-khau-quan-ly\n",
    )
    assert status == 0
    path = tmp_path / "users.toml"
    text = path.read_text("utf-8")
    assert "mot-mat-khau-dai" not in text and text.count("$argon2id$") == 2
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    users = UserFile(path)
    assert users.login("an", "mot-mat-khau-dai") is not None
    assert users.login("giahiep", "mat-khau-quan-ly").unit == GIA_HIEP  # type: ignore[union-attr]

    run(
        [*add, "an", "--role", "auditor", "--password-stdin"],
        capsys,
        monkeypatch,
        "mat-khau-moi-123\n",
    )
    assert UserFile(path).login("an", "mot-mat-khau-dai") is None
    assert UserFile(path).login("an", "mat-khau-moi-123") is not None

    status, out, _ = run(["--config", config, "web", "user", "list"], capsys, monkeypatch)
    assert out.splitlines() == [
        "an  auditor  -  (password)",
        f"giahiep  manager  {GIA_HIEP}  (password)",
    ]
    status, _, _ = run(["--config", config, "web", "user", "remove", "an"], capsys, monkeypatch)
    assert status == 0 and set(UserFile(path).users()) == {"giahiep"}
    status, _, err = run(["--config", config, "web", "user", "remove", "an"], capsys, monkeypatch)
    assert status == 1 and "no user an" in err


@pytest.mark.parametrize(
    ("args", "stdin", "problem"),
    [
        (["x", "--role", "manager"], "mat-khau-du-dai\n", "give --unit"),
        (["x", "--role", "auditor", "--unit", GIA_HIEP], "mat-khau-du-dai\n", "no --unit"),
        (["x", "--role", "auditor"], "ngan\n", "10 characters"),
        (["bad name", "--role", "auditor"], "mat-khau-du-dai\n", "letters, digits"),
    ],
)
def test_a_bad_user_is_refused_and_nothing_written(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    stdin: str,
    problem: str,
) -> None:
    config = str(write_config(tmp_path))
    status, _, err = run(
        ["--config", config, "web", "user", "add", *args, "--password-stdin"],
        capsys,
        monkeypatch,
        stdin,
    )
    assert status == 2 and problem in err
    assert not (tmp_path / "users.toml").exists()


def test_a_single_sign_on_user_has_no_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = str(write_config(tmp_path))
    status, _, _ = run(
        ["--config", config, "web", "user", "add", "sso", "--role", "auditor", "--sso-only"],
        capsys,
        monkeypatch,
    )
    assert status == 0
    user = UserFile(tmp_path / "users.toml").get("sso")
    assert user is not None and user.password == "" and not user.check("")


def test_a_hand_edited_users_file_is_checked(tmp_path: Path) -> None:
    """A users file with a plain password, or a manager without a unit, is refused with its
    line, not half read."""
    path = tmp_path / "users.toml"
    path.write_text('[users.an]\nrole = "auditor"\npassword = "plain"\n', "utf-8")
    with pytest.raises(ConfigError, match=r"users.toml:3: users.an.password: must be an Argon2"):
        read_users(path)
    path.write_text('[users.an]\nrole = "manager"\n', "utf-8")
    with pytest.raises(ConfigError, match="a manager sees one unit"):
        read_users(path)


def test_a_broken_users_file_lets_nobody_in_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Broken while the console runs: nobody is let in (it fails closed), the log says why;
    at start, and in ``congvu config check``, it is a configuration error (exit 2)."""
    config = str(write_config(tmp_path))
    run(
        ["--config", config, "web", "user", "add", "an", "--role", "auditor", "--password-stdin"],
        capsys,
        monkeypatch,
        "mot-mat-khau-dai\n",
    )
    users = UserFile(tmp_path / "users.toml")
    assert users.get("an") is not None
    (tmp_path / "users.toml").write_text('[users.an]\nrole = "root"\n', "utf-8")
    with structlog.testing.capture_logs() as logs:
        assert users.get("an") is None
    assert logs[0]["event"] == "web.users_invalid" and "role" in logs[0]["error"]
    for command in (["web"], ["config", "check", config]):
        status, _, err = run(["--config", config, *command], capsys, monkeypatch)
        assert status == 2 and "users.toml:2: users.an.role" in err, command


def test_a_taken_port_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``congvu web`` binds its port first: taken, it says so and exits 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = str(write_config(tmp_path, f'listen = "127.0.0.1:{port}"\n'))
        status, _, err = run(["--config", config, "web"], capsys, monkeypatch)
    assert status == 2
    assert err.startswith("congvu web: ") and str(port) in err and err.count("\n") == 1
