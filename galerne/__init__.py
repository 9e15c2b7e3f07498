"""Galerne: a self-hostable Models-as-a-Service platform with a Mistral/OpenAI-compatible API."""

__version__ = "0.1.0"
