"""Touchpoint's common library: contracts, Kafka and database plumbing, settings, HTTP bits."""
