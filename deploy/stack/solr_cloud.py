"""The SolrCloud collection of `up --cloud`: solr_conf/ uploaded as configset `tinytags`, then the
collection created or, when it exists, reloaded so that it serves the configset just uploaded.
Each of its shards (TINYTAGS_SOLR_CLOUD_SHARDS) has a replica on TINYTAGS_SOLR_CLOUD_REPLICAS nodes,
of type TINYTAGS_SOLR_CLOUD_REPLICA_TYPE (nrt: every replica indexes each document; tlog: only the
leader does, the others copy its segments), so losing a node loses no documents; a collection made
with fewer replicas (before replication) gets the missing ones added. ``replica_lines`` is what
`status` prints: each replica's node and state, as ZooKeeper holds them.

The standalone Solr needs none of this: its launcher (deploy/solr) makes the core from solr_conf/ in
the Solr home itself.
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
    kind = replica_type(settings)
    if name in existing:
        _solr_admin(f"{base}/admin/collections?action=RELOAD&name={name}&wt=json")
        added = 0
        for shard, replicas in cluster_shards(settings, name).items():
            for _ in range(settings.cloud_replicas - len(replicas)):
                _solr_admin(f"{base}/admin/collections?action=ADDREPLICA&collection={name}&shard={shard}"
                            f"&type={kind}&wt=json")
                added += 1
        more = f", {added} replicas added" if added else ""
        return f"{'collection':15} {name} reloaded with solr_conf/{more}  {base}/{name}"
    _solr_admin(
        f"{base}/admin/collections?action=CREATE&name={name}&numShards={settings.cloud_shards}"
        f"&{kind}Replicas={settings.cloud_replicas}&collection.configName=tinytags&wt=json"
    )
    return (f"{'collection':15} {name} created ({settings.cloud_shards} shards x {settings.cloud_replicas} "
            f"{kind.upper()} replicas)  {base}/{name}")


def replica_type(settings: StackSettings) -> str:
    """nrt or tlog (TINYTAGS_SOLR_CLOUD_REPLICA_TYPE), or a StackError naming the variable."""
    kind = settings.cloud_replica_type.lower()
    if kind not in ("nrt", "tlog"):
        raise StackError(f"TINYTAGS_SOLR_CLOUD_REPLICA_TYPE should be nrt or tlog, got {settings.cloud_replica_type!r}")
    return kind


def cluster_shards(settings: StackSettings, name: str = DEFAULT_COLLECTION) -> dict[str, list[dict]]:
    """shard name -> its replicas as CLUSTERSTATUS gives them (core, base_url, state, type, leader)."""
    answer = _solr_admin(f"{settings.solr_cloud_root}/admin/collections?action=CLUSTERSTATUS"
                         f"&collection={name}&wt=json")
    cluster = answer.get("cluster", {})
    live = set(cluster.get("live_nodes", []))
    shards = cluster.get("collections", {}).get(name, {}).get("shards", {})
    result = {}
    for shard, body in sorted(shards.items()):
        result[shard] = [dict(replica, name=key, state=replica.get("state") if replica.get("node_name") in live
                              else "down (node gone)")
                         for key, replica in sorted(body.get("replicas", {}).items())]
    return result


def replica_lines(settings: StackSettings, name: str = DEFAULT_COLLECTION) -> list[str]:
    """A `status` line per replica of the collection: shard, node, type, state, leader or not."""
    try:
        shards = cluster_shards(settings, name)
    except StackError as error:
        return [f"{'replicas':15} unknown: {error}"]
    if not shards:
        return [f"{'replicas':15} collection {name} not found"]
    return [f"{'replica':15} {name}/{shard} {replica.get('core')} on {replica.get('base_url')}: "
            f"{replica.get('type', '').lower()} {replica['state']}{' leader' if replica.get('leader') == 'true' else ''}"
            for shard, replicas in shards.items() for replica in replicas]


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
