#!/usr/bin/env bash
# The compose `jobs` service: shards into HDFS, then train -> tag -> index on the Spark cluster.
set -euo pipefail
cd /opt/tinytags
# Every node of the image has the tinytags package installed (Dockerfile), so no --py-files.
submit() { spark-submit --master "$TINYTAGS_SPARK_MASTER" "$@"; }
python -m jobs.shards split "$TINYTAGS_TINY" --out "$TINYTAGS_HDFS_URI/tinytags/shards"
submit jobs/train.py --cifar "$TINYTAGS_CIFAR" --model "$TINYTAGS_MODEL_DIR"
submit jobs/tag.py --model "$TINYTAGS_MODEL_DIR" --input "$TINYTAGS_HDFS_URI/tinytags/shards" \
  --output "$TINYTAGS_HDFS_URI/tinytags/tags" --resume
submit jobs/index.py --input "$TINYTAGS_HDFS_URI/tinytags/tags" --solr "$TINYTAGS_SOLR_URL" --resume
touch /tmp/pipeline.done
