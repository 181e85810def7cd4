"""I/O and services: settings, storage, Spark session, Solr client."""
