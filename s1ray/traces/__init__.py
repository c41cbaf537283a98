"""Trace generation at scale: teachers (local vLLM via Ray Data, or OpenAI-compatible APIs)
write reasoning traces -- or solver samples -- for a question dataset, sharded and resumable.

Entry points: :func:`s1ray.traces.job.run_traces` (``jobs/generate_traces.py``),
:func:`s1ray.traces.output.read_traces`.
"""
