"""Integrations with other libraries, each in a module of its own with its own extra.

- :mod:`flexframe.integrations.transformers` (``pip install "flexframe[hf]"``): frame masks and
  the reconstruction loss inside HuggingFace video LLMs (Qwen2-VL, Qwen2.5-VL, Qwen3-VL,
  LLaVA-OneVision, SmolVLM).

Nothing is imported here: importing a submodule imports the library it integrates.
"""
