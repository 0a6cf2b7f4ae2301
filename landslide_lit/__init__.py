"""landslide-lit: map landslides in Sentinel-1 SAR datacubes with PyTorch Lightning."""

__version__ = "0.1.0"
