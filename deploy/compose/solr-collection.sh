#!/usr/bin/env bash
# The compose `solr-collection` service: create the 2-shard collection "tinytags" from the configset
# solr-init uploaded, as Solr's `admin` user (idempotent). The password is read from the Docker
# secret and handed to curl on a pipe (-K -), so it never appears in a command line.
set -euo pipefail
solr="${TINYTAGS_SOLR_URL%/tinytags}"
password_file=/run/secrets/solr-admin.password
admin() {
  printf 'user = "admin:%s"\n' "$(tr -d '\n' < "$password_file")" | curl -fsS -K - "$@"
}
collections="$(admin "$solr/admin/collections?action=LIST&wt=json")"
if [[ "$collections" == *'"tinytags"'* ]]; then
  echo "collection tinytags exists"
else
  admin "$solr/admin/collections?action=CREATE&name=tinytags&numShards=2&replicationFactor=1&collection.configName=tinytags&wt=json"
fi
touch /tmp/ready
