"""`python -m search.bench`: the performance benchmark (see `search/bench/__main__.py`)."""
