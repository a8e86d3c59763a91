"""The rnnlm HTTP service (FastAPI): `python -m app` serves it (app/server.py)."""
