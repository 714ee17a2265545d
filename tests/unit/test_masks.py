"""Instance masks kept as their window: the same drawing input and the same COCO run-length
encoding as the whole mask gives."""
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from detection.worker.detectors.base import Mask


def whole_mask_rle(full: np.ndarray) -> dict:
    encoded = coco_mask.encode(np.asfortranarray(full.astype(np.uint8)))
    return {"size": list(encoded["size"]), "counts": encoded["counts"].decode("ascii")}


def blob(shape, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    full = np.zeros(shape, bool)
    y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
    full[y:y + rng.integers(1, 40), x:x + rng.integers(1, 50)] = rng.random((1, 1)) < 2
    full &= rng.random(shape) < 0.8  # holes: runs broken inside the window
    return full


EDGES = {
    "empty": np.zeros((7, 5), bool),
    "every pixel": np.ones((7, 5), bool),
    "the last pixel": np.pad(np.ones((1, 1), bool), ((6, 0), (4, 0))),
    "the first pixel": np.pad(np.ones((1, 1), bool), ((0, 6), (0, 4))),
    "a whole column": np.pad(np.ones((7, 1), bool), ((0, 0), (2, 2))),
    "two columns' runs that join": np.pad(np.ones((7, 2), bool), ((0, 0), (1, 2))),
    "a row": np.pad(np.ones((1, 5), bool), ((3, 3), (0, 0))),
}


@pytest.mark.parametrize("name", EDGES)
def test_edge_cases_encode_as_the_whole_mask(name):
    full = EDGES[name]
    mask = Mask.of(full)
    assert mask.rle() == whole_mask_rle(full)
    assert np.array_equal(mask.full(), full)


@pytest.mark.parametrize("seed", range(40))
def test_random_masks_encode_and_decode_as_the_whole_mask(seed):
    full = blob((96 + seed, 128 - seed), seed)
    mask = Mask.of(full)
    assert mask.pixels.size <= 40 * 50  # the window, not the image
    assert mask.rle() == whole_mask_rle(full)
    decoded = coco_mask.decode({"size": mask.rle()["size"],
                                "counts": mask.rle()["counts"].encode()})
    assert np.array_equal(decoded.astype(bool), full)


def test_a_mask_in_either_memory_order_encodes_the_same_run_lengths():
    full = blob((48, 64), 5)
    assert Mask.of(full).rle() == Mask.of(np.asfortranarray(full)).rle() == whole_mask_rle(full)
