"""The SolrCloud collection of `up --cloud`: solr_conf/ uploaded as configset `tinytags`, then the
collection created (shards from TINYTAGS_SOLR_CLOUD_SHARDS) or, when it exists, reloaded so that
it serves the configset just uploaded. The standalone Solr needs none of this: its launcher
(deploy/solr) makes the core from solr_conf/ in the Solr home itself.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
import zipfile

from deploy.stack import ROOT, StackError
from tinytags.settings import DEFAULT_COLLECTION, StackSettings


def configset_zip(folder=ROOT / "solr_conf") -> bytes:
    """The configset folder as the zip Solr's configset UPLOAD takes (paths relative to it)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder))
    return buffer.getvalue()


def ensure_cloud_collection(settings: StackSettings, name: str = DEFAULT_COLLECTION) -> str:
    """Upload solr_conf/ as configset `tinytags` and create (or reload) the collection. Idempotent."""
    base = settings.solr_cloud_root
    _solr_admin(f"{base}/admin/configs?action=UPLOAD&name=tinytags&overwrite=true&wt=json", data=configset_zip())
    existing = _solr_admin(f"{base}/admin/collections?action=LIST&wt=json").get("collections", [])
    if name in existing:
        _solr_admin(f"{base}/admin/collections?action=RELOAD&name={name}&wt=json")
        return f"{'collection':15} {name} reloaded with solr_conf/  {base}/{name}"
    _solr_admin(
        f"{base}/admin/collections?action=CREATE&name={name}&numShards={settings.cloud_shards}"
        f"&replicationFactor=1&collection.configName=tinytags&wt=json"
    )
    return f"{'collection':15} {name} created ({settings.cloud_shards} shards)  {base}/{name}"


def _solr_admin(url: str, data: bytes | None = None) -> dict:
    """One admin call; its JSON answer, or a StackError with Solr's message."""
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        request.add_header("Content-Type", "application/octet-stream")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise StackError(f"SolrCloud admin call failed: {url}: {error.read()[:500]!r}") from error
    except OSError as error:
        raise StackError(f"SolrCloud admin call failed: {url}: {error}") from error
