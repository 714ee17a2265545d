"""The web process: the Pyramid app's views, its service and what guards it. It never imports
model or worker code (tests/unit/test_layering.py)."""
