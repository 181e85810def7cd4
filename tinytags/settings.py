"""The one settings place: every TINYTAGS_* environment variable is read here, when it is asked for.

Flags take their defaults from these (jobs), and so does the web app's config; nothing reads the
environment at import time, so a test or a driver can set a variable and call a function.

| variable | what | default |
|---|---|---|
| TINYTAGS_SOLR_URL | Solr collection URL, or Solr's root (``.../solr``) | http://127.0.0.1:8983/solr/tinytags |
| TINYTAGS_SOLR_COLLECTION | collection appended to a root URL | tinytags |
| TINYTAGS_SOLR_USER | Solr BasicAuth user (jobs: ``indexer``, web app: ``search``) | none (anonymous) |
| TINYTAGS_SOLR_PASSWORD_FILE, TINYTAGS_SOLR_PASSWORD | its password: a file holding it (Docker secrets), or the value | none |
| TINYTAGS_WEBHDFS_URL | WebHDFS address for hdfs:// paths | http://<namenode host>:9870 |
| TINYTAGS_HDFS_USER | HDFS user | $USER |
| TINYTAGS_MODEL_DIR, TINYTAGS_CIFAR, TINYTAGS_SHARDS, TINYTAGS_TAG_OUTPUT | paths for the jobs | none |
| TINYTAGS_SPARK_MASTER | master when a job runs under plain python | local[*] |
| TINYTAGS_PACK_WORKERS | decoding processes of ``python -m jobs.shards pack`` | every core |
| TINYTAGS_SOURCE_ROOT | web app: the folder (local or hdfs://) whose packed originals it may read for previews | none (no previews) |
| TINYTAGS_PREVIEW_SIDE, TINYTAGS_PREVIEW_MAX_BYTES | web app: preview size in pixels; largest original it reads | 512; 50 MiB |

Job-specific tunables (TINYTAGS_INDEX_*, TINYTAGS_TAG_*) are listed in each job's ``--help``.
"""

from __future__ import annotations

import os

DEFAULT_SOLR_URL = "http://127.0.0.1:8983/solr/tinytags"
DEFAULT_COLLECTION = "tinytags"


def env(name: str, default: str | None = None) -> str | None:
    """A setting from the environment (TINYTAGS_*), read now; empty counts as unset."""
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_number(name: str, default: float, kind=float):
    """A numeric setting; a ValueError names the variable when it is not a number."""
    value = env(name)
    if value is None:
        return default
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name} should be a number, got {value!r}") from None


def solr_collection_url(url: str | None = None) -> str:
    """The Solr collection URL: ``url`` (else TINYTAGS_SOLR_URL, else the local default).

    Solr's root URL (ending in ``/solr``) names no collection: TINYTAGS_SOLR_COLLECTION (default
    tinytags) is appended, so one TINYTAGS_SOLR_URL serves the jobs and the web app alike.
    """
    url = (url or env("TINYTAGS_SOLR_URL") or "").rstrip("/")
    if not url:
        collection = env("TINYTAGS_SOLR_COLLECTION")
        return DEFAULT_SOLR_URL.rsplit("/", 1)[0] + "/" + collection if collection else DEFAULT_SOLR_URL
    if url.endswith("/solr"):
        return f"{url}/{env('TINYTAGS_SOLR_COLLECTION', DEFAULT_COLLECTION)}"
    return url


def solr_credentials() -> tuple[str, str] | None:
    """(user, password) for Solr's BasicAuth from TINYTAGS_SOLR_USER and TINYTAGS_SOLR_PASSWORD_FILE
    (a file, e.g. a Docker secret; trailing newline dropped) or TINYTAGS_SOLR_PASSWORD; None when no
    user is set. A user without a password, or an unreadable file, is a ValueError naming the variable."""
    user = env("TINYTAGS_SOLR_USER")
    password_file, password = env("TINYTAGS_SOLR_PASSWORD_FILE"), env("TINYTAGS_SOLR_PASSWORD")
    if user is None:
        if password_file or password:
            raise ValueError("TINYTAGS_SOLR_PASSWORD(_FILE) is set but TINYTAGS_SOLR_USER is not")
        return None
    if password_file:
        try:
            with open(password_file, encoding="utf-8") as handle:
                password = handle.read().rstrip("\r\n")
        except OSError as error:
            raise ValueError(f"TINYTAGS_SOLR_PASSWORD_FILE={password_file}: cannot read the password of "
                             f"Solr user {user!r}: {error.strerror}") from None
    if not password:
        raise ValueError(f"TINYTAGS_SOLR_USER={user} needs TINYTAGS_SOLR_PASSWORD_FILE or TINYTAGS_SOLR_PASSWORD")
    return user, password


def add_hdfs_flags(parser) -> None:
    """--webhdfs and --hdfs-user, the flags of every command that reads or writes hdfs:// paths."""
    parser.add_argument("--webhdfs", default=env("TINYTAGS_WEBHDFS_URL"),
                        help="WebHDFS URL for hdfs:// paths (env TINYTAGS_WEBHDFS_URL; default namenode host:9870)")
    parser.add_argument("--hdfs-user", default=env("TINYTAGS_HDFS_USER"),
                        help="HDFS user (env TINYTAGS_HDFS_USER, else $USER)")
