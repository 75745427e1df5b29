"""Sub-commands of ``inspector`` that need Kafka, Redis or Prometheus (one module each, ``register(app)``)."""
