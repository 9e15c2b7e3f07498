"""Guardrails: the moderation classifier, deterministic PII detectors, system-level policies and their audit."""
