"""Export a trained network's EMA weights as ``.safetensors``, with the options that rebuild the network.

    python scripts/export_safetensors.py --model experiments/NAME/models/net_g_latest.pth --out NAME.safetensors
        [--param_key params_ema] [--opt OPTIONS.yml] [--overwrite]

The options default to the ``options_NAME.yml`` that training saved beside ``models/``. The file's metadata holds
``network_g`` and the tone settings (``hdr_max``, ``tone_curve``, ``lq_linearize``) as JSON, the source checkpoint
and its iteration, so ``inference_hdr.py --model NAME.safetensors`` needs no ``--opt``; ``test.py`` loads it as
``path:pretrain_network_g``. Training states and ``net_g_*.pth`` checkpoints stay ``.pth``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from DiffIR.utils.cli import run_cli  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint to export (net_g_*.pth)")
    p.add_argument("--out", default=None, help="output file (default: the checkpoint's name with .safetensors)")
    p.add_argument("--param_key", default="params_ema", help="weights inside the checkpoint (default params_ema, "
                                                             "falls back to params)")
    p.add_argument("--opt", default=None, help="options naming network_g (default: the options saved with the run)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = p.parse_args(argv)
    out = args.out or os.path.splitext(args.model)[0] + ".safetensors"

    def run() -> None:
        from DiffIR.inference_pipeline import export_safetensors

        meta = export_safetensors(args.model, out, args.opt, args.param_key, args.overwrite)
        print(f"Wrote {out}: {args.model} [{args.param_key}], iteration {meta['iteration']}, "
              f"network_g from {meta['options']}", flush=True)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
