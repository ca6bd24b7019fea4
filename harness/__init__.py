"""harness: declarative, config-driven benchmark harness for large language models."""

__version__ = "0.1.0"
