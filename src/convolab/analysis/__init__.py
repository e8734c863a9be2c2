"""Architecture analysis: output sizes, parameters, MACs, activation memory and receptive fields.

``summarize(model, "3,224,224")`` traces one forward and returns every figure per layer;
``verify=True`` checks them against execution. The formula helpers are the tutorials' equations.
"""

from convolab.analysis.formulas import ReceptiveField, conv_output_size, pool_output_size, receptive_field
from convolab.analysis.summary import ModelSummary, build_stack, format_side_by_side, parse_input, summarize
from convolab.analysis.trace import InputTooSmallError, trace_model
from convolab.analysis.verify import Verification, verify

__all__ = ["conv_output_size", "pool_output_size", "receptive_field", "ReceptiveField", "summarize", "ModelSummary",
           "build_stack", "format_side_by_side", "parse_input", "trace_model", "InputTooSmallError", "verify",
           "Verification"]
