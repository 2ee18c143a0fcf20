"""Shared by both sides before an engine starts: the command it runs with (render) and
the checks that it can start (vllmctl check, and `run` before anything starts)."""
