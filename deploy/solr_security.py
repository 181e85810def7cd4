"""Solr's security.json for TinyTags, built at deploy time from passwords that are never committed.

    python -m deploy.solr_security --secrets DIR --out FILE [--create]

Three users, each with the role of the same name (the RuleBasedAuthorizationPlugin's permissions
below; the first permission that matches a request decides):

- ``admin``: everything: security, collection and core admin, config and schema edits, the UI.
- ``indexer`` (jobs/index.py): update and read, the schema's field list.
- ``search`` (the web app): read and the schema's field list, nothing else.

Anonymous requests get 401 everywhere except Solr's health check (``/admin/info/health``), so a
container healthcheck needs no password. Passwords come from ``DIR/solr-<user>.password``
(Docker secrets in compose, ``.stack/secrets/`` locally); ``--create`` writes the missing ones,
random, readable by their owner only. The credentials are Solr's Sha256AuthenticationProvider
format, ``base64(sha256(sha256(salt + password))) base64(salt)`` with a fresh 32-byte salt, so
the file holds no password and differs on every run.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import sys
from pathlib import Path

USERS = ("admin", "indexer", "search")
READERS = ["search", "indexer", "admin"]
# First match wins: admin-only areas first, then what the clients may do, then "all" for admin.
PERMISSIONS = [
    {"name": "health", "role": None},
    {"name": "security-edit", "role": "admin"},
    {"name": "security-read", "role": "admin"},
    {"name": "collection-admin-edit", "role": "admin"},
    {"name": "collection-admin-read", "role": "admin"},
    {"name": "core-admin-edit", "role": "admin"},
    {"name": "core-admin-read", "role": "admin"},
    {"name": "config-edit", "role": "admin"},
    {"name": "schema-edit", "role": "admin"},
    {"name": "update", "role": ["indexer", "admin"]},
    {"name": "read", "role": READERS},
    {"name": "schema-read", "role": READERS},
    {"name": "all", "role": "admin"},
]


def password_file(secrets_dir: Path, user: str) -> Path:
    """Where a user's password is kept: ``<dir>/solr-<user>.password``."""
    return Path(secrets_dir) / f"solr-{user}.password"


def hash_password(password: str, salt: bytes | None = None) -> str:
    """Solr's stored form of a password: ``base64(sha256(sha256(salt + password))) base64(salt)``."""
    salt = secrets.token_bytes(32) if salt is None else salt
    digest = hashlib.sha256(hashlib.sha256(salt + password.encode("utf-8")).digest()).digest()
    return f"{base64.b64encode(digest).decode()} {base64.b64encode(salt).decode()}"


def check_password(password: str, stored: str) -> bool:
    """True when ``password`` is the one ``stored`` (Solr's format) was made from."""
    _, _, salt = stored.partition(" ")
    return hmac.compare_digest(hash_password(password, base64.b64decode(salt)), stored)


def security_json(passwords: dict[str, str]) -> dict:
    """security.json for the users' passwords (every one of USERS needed)."""
    missing = [user for user in USERS if not passwords.get(user)]
    if missing:
        raise ValueError(f"no password for Solr user(s) {missing}")
    return {
        "authentication": {
            "class": "solr.BasicAuthPlugin",
            # Anonymous requests reach the authorization rules, which ask every one but the health
            # check to log in (401): the healthcheck of a container needs no secret.
            "blockUnknown": False,
            "realm": "TinyTags Solr",
            "forwardCredentials": False,
            "credentials": {user: hash_password(passwords[user]) for user in USERS},
        },
        "authorization": {
            "class": "solr.RuleBasedAuthorizationPlugin",
            "user-role": {user: [user] for user in USERS},
            "permissions": PERMISSIONS,
        },
    }


def read_passwords(secrets_dir: Path, create: bool = False) -> dict[str, str]:
    """Each user's password from its file; with ``create`` a missing file gets a random one (mode 600)."""
    passwords = {}
    for user in USERS:
        path = password_file(secrets_dir, user)
        if not path.exists() and create:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(24) + "\n")
        try:
            passwords[user] = path.read_text().rstrip("\r\n")  # as tinytags.settings reads it
        except OSError as error:
            raise ValueError(f"cannot read the password of Solr user {user!r} from {path}: "
                             f"{error.strerror} (create it, or run with --create)") from None
        if not passwords[user]:
            raise ValueError(f"{path} is empty: the password of Solr user {user!r}")
    return passwords


def write_security_json(secrets_dir: Path, out: Path, create: bool = False) -> Path:
    """Build security.json from the password files and write it (atomically) to ``out``."""
    text = json.dumps(security_json(read_passwords(secrets_dir, create)), indent=2) + "\n"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.name + ".tmp")
    temporary.write_text(text)
    temporary.chmod(0o644)  # only salted hashes; Solr (another uid in compose) must read it
    temporary.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secrets", type=Path, required=True,
                        help="folder holding solr-admin.password, solr-indexer.password, solr-search.password")
    parser.add_argument("--out", type=Path, help="where to write security.json (omit with --create: passwords only)")
    parser.add_argument("--create", action="store_true", help="write random passwords for missing files (mode 600)")
    args = parser.parse_args(argv)
    try:
        if args.out is None:
            if not args.create:
                parser.error("--out is required unless --create only makes the password files")
            read_passwords(args.secrets, create=True)
            print(f"Solr passwords in {args.secrets}: " + ", ".join(
                str(password_file(args.secrets, user)) for user in USERS))
            return 0
        print(f"wrote {write_security_json(args.secrets, args.out, args.create)} "
              f"(users {', '.join(USERS)})")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
