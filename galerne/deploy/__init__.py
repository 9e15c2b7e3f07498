"""Engine processes Galerne starts and keeps alive (`galerne deploy`): a vLLM server, or any OpenAI-compatible one."""
