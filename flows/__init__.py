"""Thin Prefect flows and deployments: parameters, retries, schedules; no data logic."""
