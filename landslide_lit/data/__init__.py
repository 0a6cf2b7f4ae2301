"""Datacube reading, composites, chips and the LightningDataModule."""
