"""Evaluation: restored test images measured against their ground truth (evaluate@).

- `evaluate`: the stage's library: the network, the degraded input and the classical baselines on the test
  split, into metrics/<task>.json and the per-image table.
- `inference`: full-resolution restoration in tiles, with optional self-ensemble; no Lightning.
- `metrics`: PSNR and SSIM in float64 on 8-bit quantized images, as the benchmarks define them.
- `baselines`: unsharp mask, Richardson-Lucy, non-local means, wavelet and TV.
- `testsets`: SIDD's official sRGB validation blocks (1280 × 256²), read as published.
"""
