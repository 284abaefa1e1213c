"""metalab: an experiment lab for gradient-based meta-learning."""

__version__ = "0.1.0"
