"""gacclint: a static linter and auto-fixer for PyTorch training loops."""

__version__ = "0.1.0"
