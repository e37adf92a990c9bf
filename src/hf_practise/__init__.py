"""hf_practise: make pretrained vision backbones faster with a tiny set of images (PRACTISE block dropping)."""

from .adaptors import fold_adaptors, insert_adaptors
from .backbones import BackboneFamily, BlockRef, get_family, register_family
from .compressor import PractiseCompressor
from .config import CompressionConfig, FinetuneConfig, LatencyConfig, ScanConfig
from .data import TinySet, TinySetInfo, load_image_dataset, load_tiny_set
from .latency import (
    LatencyComparison,
    LatencyStats,
    LatencyTable,
    block_latency_table,
    compare_latency,
    count_macs,
    count_params,
    measure_latency,
)
from .loading import load_compressed
from .mimic import FinetuneResult, evaluate_metrics, evaluate_top1, mimic_finetune
from .objectives import Augmentation, Objective, register_augmentation, register_objective
from .publish import OnnxCheck
from .recoverability import ScanRow, build_pruned, rank_blocks, scan_blocks
from .result import CompressionResult
from .runtimes import export_onnx_bytes
from .selection import LatencyTargetUnreachable, Selection, SelectionCheck, check_reachable, select_in_order

__version__ = "0.1.0"

__all__ = [
    "Augmentation",
    "BackboneFamily",
    "BlockRef",
    "CompressionConfig",
    "CompressionResult",
    "FinetuneConfig",
    "FinetuneResult",
    "LatencyComparison",
    "LatencyConfig",
    "LatencyStats",
    "LatencyTable",
    "LatencyTargetUnreachable",
    "Objective",
    "OnnxCheck",
    "PractiseCompressor",
    "ScanConfig",
    "ScanRow",
    "Selection",
    "SelectionCheck",
    "TinySet",
    "TinySetInfo",
    "block_latency_table",
    "build_pruned",
    "check_reachable",
    "compare_latency",
    "count_macs",
    "count_params",
    "evaluate_metrics",
    "evaluate_top1",
    "export_onnx_bytes",
    "fold_adaptors",
    "get_family",
    "insert_adaptors",
    "load_compressed",
    "load_image_dataset",
    "load_tiny_set",
    "measure_latency",
    "mimic_finetune",
    "rank_blocks",
    "register_augmentation",
    "register_family",
    "register_objective",
    "scan_blocks",
    "select_in_order",
]
