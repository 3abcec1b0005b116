"""Runnable examples (see each file's docstring for its one command)."""
