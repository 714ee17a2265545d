"""Checkpoints for mmdet's real configs with random weights (no zoo download is possible here).

mmdet's own initialisation shrinks a fresh head's features to ~0, so every box would get the same
score; re-estimating BatchNorm statistics on random inputs makes outputs depend on the image, so
detections (and the oracle comparison) mean something. No training happens.
"""
from __future__ import annotations

from pathlib import Path


def build_random_checkpoint(config_name: str, destination: Path, seed: int = 0) -> Path:
    """Save a checkpoint of mmdet's model for ``config_name`` (relative to mmdet's configs)."""
    import torch
    from mmdet.apis import init_detector
    from mmengine.config import Config
    from torch.nn.modules.batchnorm import _BatchNorm

    from detection.models import mmdet_configs_dir

    config = Config.fromfile(mmdet_configs_dir() / config_name)
    config.model.backbone.init_cfg = None  # no pretrained backbone download
    torch.manual_seed(seed)
    model = init_detector(config, checkpoint=None, device="cpu")
    model.init_weights()
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            features = model.extract_feat(torch.randn(2, 3, 256, 256))
            if hasattr(model, "bbox_head"):
                model.bbox_head(features)
    destination.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "meta": {"dataset_meta": model.dataset_meta}},
               destination)
    return destination
