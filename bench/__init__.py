"""The fxchat benchmark suite: ``python -m bench run`` (``make bench``) and ``report``.

Everything here drives a real server (gunicorn workers, like production) on
loopback only, with ``wrk`` as the load generator, and writes
``bench/results/latest.json``; ``report`` turns that into
``docs/performance.rst`` and its plot.
"""
