"""Architecture analysis: output sizes and receptive fields by formula."""

from convolab.analysis.formulas import conv_output_size, pool_output_size

__all__ = ["conv_output_size", "pool_output_size"]
