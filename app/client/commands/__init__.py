"""`trainserve jobs | models | datasets`: the client commands (click; httpx and rich imported
only when a command runs, so `--help` stays fast).

Every command takes --url (TRAINSERVE_URL), --api-key (TRAINSERVE_API_KEY) and -o json. Exit
codes (app/client/errors.py): 0 succeeded, 1 the job failed, 3 cancelled, 4 --timeout passed,
2 a usage error, an unreachable server or a refused request (the server's detail is printed).

One module a group: jobs.py, models.py, datasets.py; options.py: what they share (`client`:
--url, --api-key and -o; LazyOptionsCommand).
"""

from __future__ import annotations

from app.client.commands.datasets import datasets
from app.client.commands.jobs import jobs
from app.client.commands.models import models
from app.client.commands.options import LazyOptionsCommand

__all__ = ["GROUPS", "LazyOptionsCommand"]

GROUPS = {"jobs": jobs, "models": models, "datasets": datasets}
