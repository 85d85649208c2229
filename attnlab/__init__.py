"""attnlab: see and use the attention mechanism.

One exact, fast attention core (``attnlab.core``) shared by text, image, audio and music models
(``attnlab.domains``) and their Gradio demos (``attnlab.apps``).

``import attnlab`` imports the core only; the first ``create``, ``load`` or ``list_models``
that needs them imports the domains' models (see :func:`attnlab.core.registry.discover`).
"""

from attnlab import core as _core
from attnlab.core import *  # noqa: F403 - the package re-exports the core's public names

__version__ = "0.1.0"
__all__ = [*_core.__all__, "__version__"]
