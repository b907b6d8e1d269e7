"""gpt: a lean, readable GPT core that the gpt-properties suite verifies."""
from .config import Config
from .model import GPT, Block

__all__ = ["Config", "GPT", "Block"]
