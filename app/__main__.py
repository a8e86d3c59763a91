"""`python -m app`: serve the API (app/server.py)."""

from app.server import main

main()
