"""Guaranteed output shapes: JSON schemas for tool calls, llguidance grammars, parsing and checking outputs.

The embedded engine compiles `grammars`; services parse and validate what came out with `outputs`.
"""
