"""Network building blocks: deformable convolution, large kernel attention and the restoration network."""
