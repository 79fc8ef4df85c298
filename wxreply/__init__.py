"""The composition root: the one place that wires config, stores, web app and workers."""
