"""Curation: question pools -> an s1K-style dataset, as a Ray Data pipeline.

Pure decision logic: :mod:`~s1ray.curation.text`, :mod:`~s1ray.curation.filters`,
:mod:`~s1ray.curation.selection`, :mod:`~s1ray.curation.sources`; Ray: :mod:`~s1ray.curation.pipeline`
(the order of the stages) and :mod:`~s1ray.curation.stages` (one module per stage).
"""
