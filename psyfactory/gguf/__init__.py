"""GGUF export of a run's merged model: f16 -> quantized, verified against HF, Ollama Modelfile.

Pipeline (`psyfactory gguf`, `make gguf`), one module per step:
  1. `convert`: merged/ --llama.cpp convert_hf_to_gguf.py--> gguf/model-f16.gguf, then
     llama_model_quantize -> gguf/model-<QUANT>.gguf (Q4_K_M default)
  2. `verify`: in a subprocess, chat-prompt token ids vs HF `apply_chat_template`, greedy
     next-token agreement and logit error vs the HF model
  3. `modelfile`: gguf/Modelfile for Ollama, built from the model's own chat template
  4. `export`: the whole chain for a run directory, gguf/export.json
Optionally (`--lora`) the run's LoRA adapter as a GGUF adapter, verified against merged/.
`backend` evaluates and chats with an export through llama.cpp; `common` holds what they share.

llama.cpp (converter, quantizer, loader) always runs in a child process (`worker`): it can
abort the process on a broken file, and the caller must get an error message instead.
The GGUF stack is optional: `make setup-gguf` installs it (see scripts/setup_gguf.sh).
"""

from psyfactory.core.errors import GGUFError
from psyfactory.gguf.common import (
    DEFAULT_QUANT,
    QUANTS,
    GGUFUnavailable,
    available,
    check_gguf_file,
    setup_info,
)

__all__ = ["DEFAULT_QUANT", "QUANTS", "GGUFError", "GGUFUnavailable", "available", "check_gguf_file", "setup_info"]
