"""The client side of `trainserve`: commands that talk to a running service over HTTP (httpx).

No torch, no FastAPI: `trainserve --help` and every client command start fast. Only
app/cli.py imports this package; it imports app.core.settings (the embedded default's URL and
key file) and models.request (the flags of `jobs submit`), nothing else of ours.
"""
