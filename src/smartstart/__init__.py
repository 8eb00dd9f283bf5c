"""SmartStart: the SmartStart Platform and its database operations toolkit."""

__version__ = "0.1.0"
