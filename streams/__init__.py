"""fraudstream's stream processing: settings, the Faust app, Kafka and Redis edges, CLI."""
