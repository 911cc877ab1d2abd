"""robust: an honest robustness report for image classifiers."""

__version__ = "0.1.0"
