"""TinyTags spark-submit entry points: train.py, tag.py, index.py, pack.py; shards.py for ``python -m jobs.shards``.

Each only parses flags, starts Spark and calls the library (``tinytags``); nothing imports this package.
"""
