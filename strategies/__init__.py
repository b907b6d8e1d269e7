"""Hypothesis strategies for gpt-properties: valid and invalid configs, token batches, decode plans.

Strategies only draw data; models are built in the test bodies. Compose them freely::

    from strategies import configs, token_batches, ConfigSpace
    config = data.draw(configs(ConfigSpace(positions=("rope",))), label="config")
    idx = data.draw(token_batches(config), label="idx")
"""
from .batches import decode_plans, perturbations, token_batches
from .configs import SIZES, configs, invalid_configs
from .masks import PackedRows, PaddedBatch, packed_rows, padded_batches, ragged_starts, repadded
from .masks import segment_positions
from .space import ConfigSpace
from .tensors import devices, float_dtypes, seeds

__all__ = [
    "ConfigSpace", "SIZES", "configs", "invalid_configs", "token_batches", "perturbations", "decode_plans",
    "float_dtypes", "devices", "seeds",
    "PaddedBatch", "padded_batches", "repadded", "PackedRows", "packed_rows", "ragged_starts",
    "segment_positions",
]
