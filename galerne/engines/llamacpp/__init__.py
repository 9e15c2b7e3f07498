"""The embedded llama.cpp engine: continuous batching over slots of one llama_context."""
