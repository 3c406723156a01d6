"""FastAPI service: serves the published policy and champion model (``service.app.create_app``)."""
