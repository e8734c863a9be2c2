"""Data: named datasets and image folders, decoded once into memory, served in batches from there."""

from convolab.data.dataset import ImageDataset, Split, list_datasets, load_dataset, locate_dataset, normalization_stats
from convolab.data.loader import DeviceLoader
from convolab.data.named import DATASETS, DatasetSpec

__all__ = ["load_dataset", "list_datasets", "locate_dataset", "ImageDataset", "Split", "DeviceLoader",
           "normalization_stats", "DATASETS", "DatasetSpec"]
