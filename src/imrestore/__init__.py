"""imrestore: a data-versioned pipeline for learned image restoration (deblurring and denoising)."""

__version__ = "0.1.0"
