"""`galerne eval`: standard benchmarks (MMLU, HellaSwag, ARC, their multilingual variants, GSM8K, HumanEval,
MBPP) read from local files and run against catalogue models through the same services as the API.

A peer of the API on top of `services`: it never reaches an engine except through them, so what it measures
is what users of the deployment get, metered under a project.
"""
