"""The decoding core: what every family that generates tokens shares (worker side; nothing here is imported
at plan time).

- ``rules.py``: logits processing as Hugging Face's generate does it — suppressed tokens, tokens suppressed at
  the first step, and Whisper's timestamp rules — as torch operations with per-row state in tensors, so the
  same code runs on the host and inside a captured CUDA graph.
- ``greedy.py``: the greedy loop over a decoder step graph with retained state (past keys/values are graph
  inputs and outputs of fixed ``ctx_len``), on any runtime: a host loop for sessions that take numpy arrays,
  and a device loop (``device.py``) for torch sessions, whose state stays in static device buffers and whose
  whole step is one CUDA graph where the session allows.

A family gives the loop its encoder side's outputs (cross-attention keys/values), per-row prompts and its
rules; the loop gives back tokens, and whether each row ended.
"""
