"""Bounds of option values that no table row can express alone."""
from __future__ import annotations

#: the DIRformer halves a training patch three times, so ``gt_size`` must be a multiple of 2³
PATCH_MULTIPLE = 8
#: Upper bounds of sizes: far above any real use, low enough that a typo (an extra digit, a number pasted in the
#: wrong place) is named by its key instead of ending in numpy's "array is too big" or an exhausted memory.
MAX_PATCH = 8192          # gt_size: a training patch side in pixels
MAX_IMAGE_SIDE = 16384    # val:tile_size and a metric's crop_border: sides of whole images
MAX_BATCH = 1024          # batch_size_per_gpu
MAX_WORKERS = 256         # num_worker_per_gpu
MAX_ENLARGE = 1000        # dataset_enlarge_ratio (the sampler draws a permutation of len(set) x ratio positions)
MAX_PREFETCH = 64         # num_prefetch_queue batches kept in memory
MAX_WINDOW = 256          # val:window_size, the network's size multiple
MAX_SYNTHETIC = 100000    # synthetic:num_images
