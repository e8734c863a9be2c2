"""Model zoo: every model is built by ``create_model(name, ...)`` and shares one surface.

``forward_features(x)`` (unpooled map), ``forward_head(x, pre_logits=False)``, ``forward(x)``,
``get_classifier()``, ``reset_classifier(n)`` and ``feature_info`` (list of dicts: ``module``,
``num_chs``, ``reduction``). What goes in and comes out depends on the model's input kind (image,
clip or segmentation; ``convolab.models._base`` states each).
"""

import importlib
import pkgutil

from convolab.models._activations import ACTIVATIONS
from convolab.models._base import ConvClassifier, ConvSegmenter
from convolab.models._factory import create_model, model_options
from convolab.models._init import INIT_SCHEMES, init_weights
from convolab.models._registry import ModelEntry, get_model_entry, list_models, model_entries, register_model

# Importing a family's file registers its models: import every public module of this package.
for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["create_model", "list_models", "register_model", "get_model_entry", "model_entries", "ModelEntry",
           "model_options", "ConvClassifier", "ConvSegmenter", "ACTIVATIONS", "INIT_SCHEMES", "init_weights"]
