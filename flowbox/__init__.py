"""flowbox: a self-hosted conversational-AI appliance."""

__version__ = "0.1.0"
