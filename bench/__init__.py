"""`make bench`: edgepipe's speed figures (bench/bench.py)."""
