"""Text generation: chats, decoder graph edits, the genai builder, parity, bench runners and rows."""
from edgeft.generation.task import TASK

__all__ = ["TASK"]
