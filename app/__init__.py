"""The rnnlm HTTP service (FastAPI): `uvicorn --factory app.main:create_app`."""
