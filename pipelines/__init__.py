"""Stages, the tasks they pass along, and the runners that execute them."""
