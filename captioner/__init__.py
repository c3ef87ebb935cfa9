"""Captioning: the vLLM launcher, the async OpenAI-compatible client, prompts, the structured
caption schema, parsing and checks, the ``signals`` CPU backend and the fake OpenAI server the
tests talk to. See docs/architecture.md "Captioner"."""
