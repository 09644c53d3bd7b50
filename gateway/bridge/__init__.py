"""The central bridge (`sensegate bridge`): MQTT session, ingest, batching, sinks, dead letters."""
