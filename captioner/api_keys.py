"""Which API key, if any, goes to a chat endpoint: a key is sent only to the hosts allowed to
receive it, so a key exported for OpenAI never reaches a local vLLM server or any other endpoint
by accident (issue 14)."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Collection, Iterable

API_KEY_ENVS = ("VIDLOOM_CAPTION_API_KEY", "OPENAI_API_KEY")  # the first one set wins
DEFAULT_KEY_HOSTS = ("api.openai.com",)  # where a key taken from the environment may go


def key_for(base_url: str, api_key: str | None, key_hosts: Collection[str] | None,
            key_envs: Iterable[str] = API_KEY_ENVS) -> str | None:
    """The API key to send to ``base_url``: ``api_key`` (else the first of ``key_envs`` set in
    the environment) when the URL's host is one of ``key_hosts``, else None.

    ``key_hosts`` entries are host names or ``host:port``, compared case-insensitively; ``'*'``
    allows every host. ``key_hosts=None`` keeps the old call sites safe: an explicit ``api_key``
    goes to the ``base_url`` it was given with, a key from the environment only to
    ``DEFAULT_KEY_HOSTS``.
    """
    key = api_key or next((os.environ[e] for e in key_envs if os.environ.get(e)), None)
    if not key:
        return None
    if key_hosts is None:
        if api_key:
            return key
        key_hosts = DEFAULT_KEY_HOSTS
    url = urllib.parse.urlsplit(base_url)
    host = (url.hostname or "").lower()
    allowed = {h.strip().lower() for h in key_hosts}
    return key if "*" in allowed or host in allowed or f"{host}:{url.port}" in allowed else None
