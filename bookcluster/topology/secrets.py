"""Secrets of a cluster: store passwords and signing keys, never shipped in the repository.

Each secret has a name and is looked up, in order, in
1. the environment: `BOOKCLUSTER_<NAME>` (the value itself),
2. a file named by `BOOKCLUSTER_<NAME>_FILE` (Docker/Kubernetes secret files),
3. `<run_dir>/secrets/<name>`, which `bookcluster up` generates for the local cluster.
A process that needs a secret nobody provided fails at start-up and says how
to provide it. Every purpose has its own key, so a leaked webhook secret cannot
mint tickets or tokens.

This module and `environment.py` beside it are the only readers of the process
environment (`tests/unit/topology/test_environment.py` keeps it so); this one is the only
reader of secret files.
"""

from __future__ import annotations

import os
import secrets as random_source
from pathlib import Path

from bookcluster.topology.errors import RouterError

# name -> what it protects (for error messages and the README)
PURPOSES = {
    "redis_password": "every Redis server (requirepass/masterauth)",
    "pg_password": "PostgreSQL application role `bookcluster` (not a superuser)",
    "pg_admin_password": "PostgreSQL superuser `bookcluster_admin` (launcher only)",
    "jwt_secret": "HS256 signing key of user tokens",
    "webhook_secret": "HMAC key of the payment gateway's webhooks",
    "ticket_secret": "HMAC key of ticket references (printed; QR codes before signed tickets)",
    "ticket_signing_key": "seed of each region's Ed25519 ticket signing key",
    "gateway_api_key": "the merchant's API key at the payment gateway",
    "forward_secret": "HMAC key of requests one node forwards to another",
    "patroni_password": "Patroni's REST API (switchover, configuration changes)",
    "etcd_password": "each region's etcd, Patroni's DCS (user root)",
}
MIN_LENGTH = 16


def _variable(name: str) -> str:
    return f"BOOKCLUSTER_{name.upper()}"


class SecretMissing(RouterError):
    def __init__(self, name: str, run_dir: Path) -> None:
        env = _variable(name)
        super().__init__(
            f"no {name} ({PURPOSES.get(name, name)}): set {env} or {env}_FILE, or put it in "
            f"{run_dir / 'secrets' / name} (`bookcluster up` generates local ones)")
        self.name = name


class SecretTooShort(RouterError):
    pass


def secrets_dir(run_dir: Path) -> Path:
    return run_dir / "secrets"


class Secrets:
    """Read-only view of one cluster's secrets; each is read once, when first asked for."""

    def __init__(self, run_dir: Path, environ: dict[str, str] | None = None) -> None:
        self.run_dir = run_dir
        self._environ = os.environ if environ is None else environ
        self._values: dict[str, str] = {}

    def get(self, name: str) -> str:
        value = self._values.get(name)
        if value is None:
            value = self._lookup(name)
            if len(value) < MIN_LENGTH:
                raise SecretTooShort(f"{name} must be at least {MIN_LENGTH} characters")
            self._values[name] = value
        return value

    def given(self, name: str) -> str | None:
        """What `BOOKCLUSTER_<NAME>` holds, if it is set and not empty (taken as is: for a
        credential the operator hands over whole, such as an operator token)."""
        return self._environ.get(_variable(name)) or None

    def get_with_file(self, name: str, file: Path | None) -> str:
        """`name` from its variable, else from `file` (a path topology.yaml names for it,
        e.g. `auth.secret_file`), both taken as is; else as `get` finds it."""
        value = self.given(name)
        if value is not None:
            return value
        if file is not None:
            return file.read_text().strip()
        return self.get(name)

    def optional(self, name: str) -> str | None:
        """`name` as `get` finds it, or None if nobody provided it (a previous key kept
        through a rotation)."""
        try:
            return self.get(name)
        except SecretMissing:
            return None

    def require(self, *names: str) -> None:
        """Fail now, naming the first missing secret, instead of at first use."""
        for name in names:
            self.get(name)

    def source_file(self, name: str) -> Path | None:
        """The file `name` is read from (None when its variable holds it): the one
        `BOOKCLUSTER_<NAME>_FILE` names, else `<run_dir>/secrets/<name>`. Whether it is
        still there is an operator's alert (a Kubernetes Secret unmounted, a host's
        folder wiped): a process that restarts without it refuses to start."""
        env = _variable(name)
        if self._environ.get(env):
            return None
        named = self._environ.get(f"{env}_FILE")
        return Path(named) if named else secrets_dir(self.run_dir) / name

    def _lookup(self, name: str) -> str:
        env = _variable(name)
        if self._environ.get(env):
            return self._environ[env]
        for path in (self._environ.get(f"{env}_FILE"), secrets_dir(self.run_dir) / name):
            if path is None:
                continue
            try:
                return Path(path).read_text().strip()
            except FileNotFoundError:
                continue
        raise SecretMissing(name, self.run_dir)

    @property
    def redis_password(self) -> str:
        return self.get("redis_password")

    @property
    def pg_password(self) -> str:
        return self.get("pg_password")

    @property
    def pg_admin_password(self) -> str:
        return self.get("pg_admin_password")


_cache: dict[Path, Secrets] = {}


def cluster_secrets(run_dir: Path) -> Secrets:
    """The secrets of the cluster whose run folder is `run_dir` (one reader per folder)."""
    found = _cache.get(run_dir)
    if found is None:
        found = _cache[run_dir] = Secrets(run_dir)
    return found


def generate_local(run_dir: Path) -> list[str]:
    """Create the secrets a local cluster lacks (mode 0600). Returns the names created."""
    folder = secrets_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    created = []
    for name in PURPOSES:
        path = folder / name
        if path.exists():
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(random_source.token_urlsafe(32))
        created.append(name)
    return created
