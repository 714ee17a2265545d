"""Datasets the service keeps for fine-tuning (``store.py``), and the checks of their boxes."""
