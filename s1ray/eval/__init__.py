"""Evaluation: benchmark data, sweeps, metrics, tables and plots (answers: :mod:`s1ray.answers`)."""
