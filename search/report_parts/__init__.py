"""Pieces of the study report (`python -m search.report`) and shared look-ups of stored studies."""
