"""Wire schemas only: the JSON shapes of la Plateforme's and OpenAI's APIs, as pydantic models.

A leaf package: it imports nothing else from Galerne, so field names stay verbatim here and nowhere else.
"""
