"""Datasets in s1ray's own schemas (pure: no Ray, no vLLM)."""
