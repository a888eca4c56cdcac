"""Acquire: turn a `download.<ds>` source into the dataset's upstream layout under build/raw/<ds>/.

- `sources`: the source config (`sample`, an https:// URL or a local archive) and `acquire`, which dispatches.
- `download`: resumable, retried, sha256-pinned HTTP downloads.
- `archives`: safe extraction (no traversal, no links or devices, bounded expansion).
- `sample`: the embedded GoPro-like and SIDD-like sample, synthesized from data/sample_photos.
- `degradations`: the physics the sample uses (camera-shake blur, raw-space sensor noise).
"""
