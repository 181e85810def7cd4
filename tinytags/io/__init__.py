"""I/O and services: storage (local, hdfs://), Spark sessions, the Solr client, shard and photo files."""
