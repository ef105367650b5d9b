"""The run machinery: how the notebooks are executed, published and indexed (``python -m vitequiv.runner``).

The science modules of :mod:`vitequiv` never import this package; it imports them only where a record needs
them (the weights' identity, library versions). Its modules, each importing only those above it:

- :mod:`~vitequiv.run.records`: tasks, run statuses, run records, results, errors; reading and writing JSON;
- :mod:`~vitequiv.run.cache`: what determines a finished run, so that nothing is computed twice;
- :mod:`~vitequiv.run.execute`: the papermill call, whole-file saves, the in-process executor;
- :mod:`~vitequiv.run.profiles`: profiles, notebook discovery and inspection, the checks at the door;
- :mod:`~vitequiv.run.publish`: staging folders and publishing a finished run;
- :mod:`~vitequiv.run.index`: ``figures/README.md`` and ``figures/index.json``;
- :mod:`~vitequiv.run.sweeps`: sweep definitions and their planning; :mod:`~vitequiv.run.sweep_report` their tables;
- :mod:`~vitequiv.run.cluster`: the Dask executor;
- :mod:`~vitequiv.run.suite`: :func:`~vitequiv.run.suite.run_suite` and :func:`~vitequiv.run.suite.run_sweep`;
- :mod:`~vitequiv.run.book`: the static HTML book of a run.

The command lines sit on top and nothing imports them: :mod:`vitequiv.runner` and :mod:`vitequiv.book`.
"""
