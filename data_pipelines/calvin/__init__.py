"""CALVIN data pipeline (see pipeline.py)."""
