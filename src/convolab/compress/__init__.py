"""Compress and ship a trained run: int8 quantization (post-training through torchao's PT2E flow, or ONNX Runtime's
static quantization; quantization-aware training), knowledge distillation, structured pruning, and export to ONNX
and to dependency-free C. Every result is measured against its honest baseline (:mod:`convolab.compress.measure`).
"""
