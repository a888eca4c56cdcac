"""The user's commands: `imrestore` (`cli`) and what it runs outside the DVC stages.

- `cli`: the command line: data, params, validate, restore, export, report, paper-table.
- `restore`: restore the user's own images with trained weights (`imrestore restore`).
- `user_images`: reading and writing those images (8/16-bit, alpha, greyscale).
- `export`: a trained network as an ONNX model for deployment.
- `outputs`: where those commands write, checked before any work; a failed write as a clear error.
- `report`: what a pull request or an experiment changed (metric deltas with bootstrap intervals, params,
  plots), and the paper's Table 2 from DVC experiments.
"""
