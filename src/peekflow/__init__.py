"""peekflow: what a vision network knows, without its training data."""

__version__ = "0.1.0"
