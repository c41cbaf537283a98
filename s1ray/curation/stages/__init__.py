"""The curation stages on Ray Data, one module each; :mod:`s1ray.curation.pipeline` runs them in order.

Each stage module has ``run(ctx, tmp) -> stats``: it reads its upstream stage's ``kept`` files (or
the sources) through the :class:`~s1ray.curation.stages.base.StageContext` and writes its own
``kept`` / ``rejects`` under ``tmp``. The per-row work lives in module-level batch functions, so
Ray pickles them by reference.
"""
