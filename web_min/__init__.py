"""The tiny web side: QR page, the original JSON API, ``/healthz``."""
