# Compress a pretrained timm or transformers backbone with PRACTISE on a tiny set of images, and save it so its own
# library (timm or transformers) reloads it.
#
# What it shows: the whole hf_practise pipeline from the command line. It loads a model (a timm name,
# `hf-hub:ORG/NAME`, `local-dir:PATH`, a Hub repo id or a local timm/transformers folder; safetensors only),
# draws a seeded few-shot sample (N images or K per class) from a Hub dataset or a local one (an imagefolder,
# i.e. one sub-folder of images per class, or a folder written by `datasets.save_to_disk`), scores every
# droppable block by recoverability, drops the best ones until the latency target holds, finetunes by feature
# mimicking, writes a native checkpoint (timm or transformers) with its model card, and optionally pushes it
# to the Hub.
#
#   python examples/compress.py --model local-dir:teacher --dataset data/ --num-samples 500 \
#       --latency-reduction 0.22 --output-dir out/
#   accelerate launch examples/compress.py ...            # same flags, any number of processes
#
# It is the installed `hf-practise compress` command (src/hf_practise/cli.py), whose flags are generated from the
# config dataclasses (`python examples/compress.py --help` lists them); `accelerate launch -m hf_practise.cli
# compress ...` is the same run without this file.
from __future__ import annotations

import sys

from hf_practise.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    """`hf-practise compress` with `argv` (default: this script's arguments)."""
    return cli_main(["compress", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
