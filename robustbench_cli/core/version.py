"""The version of robust, on the ground floor so that every floor can record it."""

__version__ = "0.1.0"
