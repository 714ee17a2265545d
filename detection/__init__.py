"""An object-detection web service: Pyramid front end, a daemonized MMDetection worker."""

__version__ = "1.0.0"
