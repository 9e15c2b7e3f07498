"""Engines run validated requests on a model: embedded llama.cpp today."""
