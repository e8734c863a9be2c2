"""Seeing inside a trained CNN: attributions, kernels and feature maps, activation maximization, TCAV."""

from convolab.explain.attribution import METHODS, attribute
from convolab.explain.layers import resolve_layer

__all__ = ["attribute", "METHODS", "resolve_layer"]
