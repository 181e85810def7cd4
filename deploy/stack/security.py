"""BasicAuth for the standalone Solr (`up --auth`, make up AUTH=1).

The same security.json as the compose stack (deploy/solr_security.py), written into Solr's home,
where a standalone Solr reads it at start, from passwords made once into .stack/secrets/
(solr-admin/indexer/search.password, mode 600). `up` without --auth removes that file again. A
running Solr keeps the mode it started with: switching needs `down` first, and `up` says so.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from pathlib import Path

from deploy import solr_security
from deploy.stack import StackError
from deploy.stack.supervisor import running_pid
from tinytags.settings import StackSettings, env


def security_file(settings: StackSettings) -> Path:
    """Where the standalone Solr reads its security.json (its home)."""
    return settings.stack_dir / "data" / "solr" / "security.json"


def secrets_dir(settings: StackSettings) -> Path:
    """The folder of the stack's Solr password files."""
    return settings.stack_dir / "secrets"


def solr_admin_headers(settings: StackSettings) -> dict[str, str]:
    """The admin's BasicAuth header when the standalone Solr's home holds a security.json, else none."""
    if not security_file(settings).exists():
        return {}
    try:
        password = solr_security.password_file(secrets_dir(settings), "admin").read_text().rstrip("\r\n")
    except OSError:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()}


def webapp_login(settings: StackSettings) -> dict[str, str]:
    """The stack's web UI reads as `search` from a Solr with auth, like the compose one: its
    environment, unless Solr is open or TINYTAGS_SOLR_USER names a user already."""
    if not solr_admin_headers(settings) or env("TINYTAGS_SOLR_USER"):
        return {}
    return {"TINYTAGS_SOLR_USER": "search",
            "TINYTAGS_SOLR_PASSWORD_FILE": str(solr_security.password_file(secrets_dir(settings), "search"))}


def configure_solr_auth(settings: StackSettings, auth: bool) -> str | None:
    """Put security.json into the standalone Solr's home (auth) or take it out; a status line or None.

    A running Solr read its security.json when it started: asking for the other mode is a
    StackError that says to stop it first.
    """
    home_file = security_file(settings)
    if running_pid(settings, "solr"):
        try:
            urllib.request.urlopen(f"{settings.solr_root}/admin/info/system?wt=json", timeout=3).close()
            running = False
        except urllib.error.HTTPError as error:
            running = error.code == 401 if error.code in (401, 403) else None
        except OSError:
            running = None  # not answering (yet): the supervisor deals with it
        if running is not None and running != auth:
            now, wanted = ("with", "without") if running else ("without", "with")
            raise StackError(f"solr: running {now} BasicAuth; to start it {wanted}, stop it first "
                             f"(make down, then make up{' AUTH=1' if auth else ''})")
    if not auth:
        if home_file.exists():
            home_file.unlink()
            return f"{'solr auth':15} off (removed {home_file})"
        return None
    folder = secrets_dir(settings)
    try:
        solr_security.write_security_json(folder, home_file, create=True)
    except ValueError as error:
        raise StackError(f"solr auth: {error}") from None
    users = ", ".join(f"{user} ({solr_security.password_file(folder, user)})" for user in solr_security.USERS)
    return f"{'solr auth':15} BasicAuth on; users and password files: {users}"
