"""Rendering for attnlab: pure functions from attention arrays to images and HTML.

No Gradio here. Every picture uses one colour map (viridis, `colors.lut`); figure views
return a `View` (``.image`` is a PIL image for ``gr.Image``; `export` writes PNG, SVG, NPZ
and JSON); the head view returns HTML for ``gr.HTML(html, js_on_load=head_view_js())``.
"""

from .arcs import piano_roll_arcs, sequence_arcs
from .checkpoint_plot import plot_checkpoint
from .colors import CMAP_NAME, colorbar_image, colorize, lut, normalize
from .export import View, export, figure_svg, raster_svg
from .head_gallery import BEHAVIOUR_COLORS, behaviour_color, head_gallery, head_gallery_html
from .head_view import (
    head_colors,
    head_view_css,
    head_view_data,
    head_view_html,
    head_view_js,
    head_view_page,
    payload_from_html,
)
from .heatmap import heatmap, model_view, shared_cmap
from .overlays import image_overlay, spectrogram_overlay, upsample_grid
from .plots import figure_to_image, plot_bench, plot_curves, save_figure
from .reduce import downsample, pool_labels, thin_labels, topk_rows

__all__ = [
    "BEHAVIOUR_COLORS",
    "CMAP_NAME",
    "View",
    "behaviour_color",
    "colorbar_image",
    "colorize",
    "downsample",
    "export",
    "figure_svg",
    "figure_to_image",
    "head_colors",
    "head_gallery",
    "head_gallery_html",
    "head_view_css",
    "head_view_data",
    "head_view_html",
    "head_view_js",
    "head_view_page",
    "heatmap",
    "image_overlay",
    "lut",
    "model_view",
    "normalize",
    "piano_roll_arcs",
    "payload_from_html",
    "plot_bench",
    "plot_checkpoint",
    "plot_curves",
    "pool_labels",
    "raster_svg",
    "save_figure",
    "sequence_arcs",
    "shared_cmap",
    "spectrogram_overlay",
    "thin_labels",
    "topk_rows",
    "upsample_grid",
]
