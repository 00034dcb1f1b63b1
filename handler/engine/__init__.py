"""Inference: llama-cpp-python models, generation and the process-wide model cache.

The only package that imports llama_cpp. It knows nothing of HTTP: the API layer hands it plain
requests (`ChatRequest`, `SamplingParams`) and reads back async streams of events.
"""
