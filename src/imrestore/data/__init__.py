"""Data: from an upstream layout to the crops training reads.

- `layouts`: the GoPro and SIDD folder layouts, their pairs, and the dataset/task names.
- `manifest`, `validation`: one row per pair, checked by Great Expectations and pandera (validate@).
- `split`: the 80:20 scene-grouped train/val/test split (split@).
- `patches`: the memory-mappable uint8 patch cache (patches@).
- `datamodule`: the Lightning DataModule that samples crops from the cache (train@).
"""
