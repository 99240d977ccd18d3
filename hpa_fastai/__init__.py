"""fastai library for multi-label protein localisation in Human Protein Atlas fluorescence images: 4-channel ResNet34 fused with biological features

Modules:

- `hpa_fastai.all`: Everything in one import: `from hpa_fastai.all import *`.
- `hpa_fastai.cells.all`: Every per-cell module in one import: `from hpa_fastai.cells.all import *`."""

__version__ = "0.0.1"
