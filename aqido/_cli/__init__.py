"""The implementation of the ``aqido`` command line (:mod:`aqido.cli` is its entry point).

- :mod:`aqido._cli.common`: exit statuses, the usage error, table columns;
- :mod:`aqido._cli.args`: the argument parser, the query and the client options it gives;
- :mod:`aqido._cli.values`: the types of the options' values (dates, counts, seconds...);
- :mod:`aqido._cli.output`: result tables and data formats;
- :mod:`aqido._cli.commands`: ``search``, ``probe``, ``crawl`` and ``demo``;
- :mod:`aqido._cli.parquet`: ``crawl --format parquet`` (sharded, optionally on Dask).
"""
