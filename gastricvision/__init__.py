"""GastricVision: review gastric H&E tiles with several neural networks.

The package holds everything below the user interfaces: image loading
(:mod:`~gastricvision.imaging`), dataset layouts and splits
(:mod:`~gastricvision.datasets`), the model registry (:mod:`~gastricvision.models`),
weights with manifests (:mod:`~gastricvision.weights`), inference
(:mod:`~gastricvision.inference`), reconstruction (:mod:`~gastricvision.reconstruction`)
and the command line (:mod:`~gastricvision.cli`). It never imports Streamlit.
"""

__version__ = "0.1.0"
