"""TinyTags jobs: spark-submit entry points (train.py, tag.py, index.py; shards.py for python -m).

The entry points only parse flags, start Spark and call extract -> transform -> load; the rules
live in jobs.core (pure: no Spark, no network) and the I/O in jobs.infra (storage, Spark
session, Solr client, settings).
"""
