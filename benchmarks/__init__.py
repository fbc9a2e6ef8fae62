"""aqido's benchmarks against the alternatives (``nox -s bench``; see :mod:`benchmarks.run`)."""
