"""Seeing inside a trained CNN: attributions, kernels and feature maps, activation maximization, TCAV."""

from convolab.explain.layers import resolve_layer

__all__ = ["resolve_layer"]
