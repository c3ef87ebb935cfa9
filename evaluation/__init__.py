"""The evaluation loop: preference annotation, the checkpoint evaluation harness and its suites."""
