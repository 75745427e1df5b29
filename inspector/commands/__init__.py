"""Sub-commands of the ``inspector`` CLI: each module defines ``register(app)``."""
