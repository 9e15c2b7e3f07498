"""Use cases: resolve the model, validate, run on an engine, measure. No HTTP types here."""
