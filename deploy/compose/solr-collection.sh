#!/usr/bin/env bash
# The compose `solr-collection` service: create the collection "tinytags" from the configset
# solr-init uploaded, 2 shards each with an NRT replica on both Solr nodes (losing one node loses no
# documents), as Solr's `admin` user (idempotent). The password is read from the Docker
# secret and handed to curl on a pipe (-K -), so it never appears in a command line.
set -euo pipefail
first="${TINYTAGS_SOLR_URL%%,*}"  # the first node of the list
solr="${first%/tinytags}"
password_file=/run/secrets/solr-admin.password
admin() {
  printf 'user = "admin:%s"\n' "$(tr -d '\n' < "$password_file")" | curl -fsS -K - "$@"
}
collections="$(admin "$solr/admin/collections?action=LIST&wt=json")"
if [[ "$collections" == *'"tinytags"'* ]]; then
  echo "collection tinytags exists"
else
  admin "$solr/admin/collections?action=CREATE&name=tinytags&numShards=2&nrtReplicas=2&collection.configName=tinytags&wt=json"
fi
touch /tmp/ready
