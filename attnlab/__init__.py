"""attnlab: see and use the attention mechanism.

One exact, fast attention core (``attnlab.core``) shared by text, image, audio and music models
(``attnlab.domains``) and their Gradio demos (``attnlab.apps``).
"""

from attnlab.core import AttentionOutput, Mask, attention, masks, scores

__version__ = "0.1.0"
__all__ = ["attention", "AttentionOutput", "Mask", "masks", "scores", "__version__"]
