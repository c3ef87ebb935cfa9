"""Thin Prefect flows and deployments: parameters, retries, schedules; no data logic.

Importing the package sets two Prefect defaults (a user's own environment wins):
- no analytics from the ephemeral server;
- 120 s, not Prefect's 20 s, for the ephemeral server to start. On a busy 2-core machine its
  start (SQLite migrations, uvicorn) takes longer than 20 s, and the run then dies before its
  first task with "Timed out while attempting to connect to ephemeral Prefect API server".
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
