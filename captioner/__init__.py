"""Captioning as a library the caption stage calls (it imports no pipeline stage): the vLLM
launcher, the async OpenAI-compatible client, prompts, the structured caption schema, parsing and
checks, the ``signals`` CPU backend, the fake OpenAI server the tests talk to, the prompt
rewriter and the VLM reward. See docs/architecture.md "Captioner"."""
