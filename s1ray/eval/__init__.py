"""Evaluation: answer extraction, grading and (pure-Python) scoring helpers."""
