"""The installation secret of `touchpoint up`: `.touchpoint/secret`, made once, reused.

The file holds one secret a line, newest first (mode 0600). The first signs link and
unsubscribe tokens and encrypts provider credentials; the lines after it are the secrets it
replaced (`touchpoint secret rotate`), kept so links in mail already sent still verify and
credentials stored before still decrypt. `TOUCHPOINT_SECRET` in the environment wins over
the file, which is then neither read nor created.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

SECRET_ENV = "TOUCHPOINT_SECRET"
PREVIOUS_ENV = "TOUCHPOINT_SECRET_PREVIOUS"
FILE_NAME = "secret"


def new_secret() -> str:
    """256 random bits, URL-safe text (no comma: the previous-secrets list splits on it)."""
    return secrets.token_urlsafe(32)


def read_secrets(path: Path) -> list[str]:
    """The secrets in `path`, newest first; [] when there is no file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def write_secrets(path: Path, values: list[str]) -> None:
    """Replace `path` atomically with `values` (newest first), readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("".join(f"{value}\n" for value in values))
    os.chmod(tmp, 0o600)  # O_CREAT's mode only applies to a new file
    os.replace(tmp, path)


def resolve_secret(state_dir: Path, environ: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """The env vars that give the services their secrets, and where they came from:
    "env" (already set), "stored" (the file) or "generated" (the file, just made)."""
    if environ.get(SECRET_ENV):
        return {}, "env"
    path = state_dir / FILE_NAME
    values = read_secrets(path)
    source = "stored"
    if not values:
        values, source = [new_secret()], "generated"
        write_secrets(path, values)
    elif path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)  # someone loosened it: a secret is for its owner only
    env = {SECRET_ENV: values[0]}
    given = [s.strip() for s in environ.get(PREVIOUS_ENV, "").split(",") if s.strip()]
    if previous := [*values[1:], *(s for s in given if s not in values)]:
        env[PREVIOUS_ENV] = ",".join(previous)
    return env, source


def rotate_secret(state_dir: Path, *, keep: int = 5) -> int:
    """Put a new secret first and keep the `keep` latest earlier ones; how many are kept."""
    path = state_dir / FILE_NAME
    values = [new_secret(), *read_secrets(path)][: keep + 1]
    write_secrets(path, values)
    return len(values) - 1
