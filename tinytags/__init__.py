"""TinyTags: the shared library of the spark-submit jobs (jobs/) and the web app (webapp/).

- ``tinytags.core``: pure record-level logic (no Spark, no files, no network): formats, features, forest, tagging.
- ``tinytags.io``: storage (local, hdfs://), the Solr client, Spark sessions, shard and photo files.
- ``tinytags.pipeline``: what each job does on Spark (extract, transform, load), called by jobs/*.py.
- ``tinytags.settings``: every TINYTAGS_* setting, read when asked for.
"""
