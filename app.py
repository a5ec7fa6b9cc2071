"""Pose Studio: draw an anime character in a given pose.

    python app.py                          # serve the web app on http://127.0.0.1:7860
    python app.py pose INPUT... [--preview DIR]
    python app.py generate --pose INPUT --seed N --out FILE.png [--steps N] [--guidance G] [--style-image IMG] ...

INPUT is a photo, a keypoint JSON (ours, COCO-17, OpenPose-18, the keypoint-LDM fork's) or a
preset name (`python app.py pose --list-presets`).
"""

from __future__ import annotations

import argparse
import sys

from models import paths

DEFAULT_MODEL = paths.WEIGHTS
# --model also takes the keypoint LDM's .ckpt/.safetensors file, or a Stable Diffusion 1.x folder or Hub id plus:
CONTROLNET_HELP = "OpenPose ControlNet (diffusers folder or Hub id) for a Stable Diffusion --model"


def _pose_command(args: argparse.Namespace) -> int:
    from models.pose_input import list_presets, main_pose

    if args.list_presets:
        print("\n".join(list_presets()))
        return 0
    if not args.inputs:
        print("pose: give at least one INPUT (a photo, a keypoint JSON or a preset name).", file=sys.stderr)
        return 2
    return main_pose(args.inputs, args.preview)


def _generate_command(args: argparse.Namespace) -> int:
    from models.generate_cli import main_generate

    return main_generate(args)


def _serve_command(args: argparse.Namespace) -> int:
    from ui.server import serve

    return serve(args)


def build_parser() -> argparse.ArgumentParser:
    """The command line: no sub-command serves the app; `pose` and `generate` run once and print JSON."""
    parser = argparse.ArgumentParser(prog="app.py", description=__doc__.split("\n")[0])
    # No defaults here: ui.server.address takes the flag, else GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, else these.
    parser.add_argument("--host", default=None, help="address to serve on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=None, help="port to serve on (default: $GRADIO_SERVER_PORT or 7860)"
    )
    parser.add_argument("--share", action="store_true", help="also ask Gradio for a public share link")
    parser.add_argument(
        "--model",
        default=str(DEFAULT_MODEL),
        help="model folder, Hub id or keypoint-LDM .ckpt (default: the shipped weights/)",
    )
    parser.add_argument("--controlnet", default=None, metavar="FOLDER_OR_ID", help=CONTROLNET_HELP)
    parser.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    parser.add_argument("--clip", default=None, metavar="SPEC", help="CLIP for prompts (default: weights/clip)")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("pose", help="read poses from photos, keypoint JSON or presets; print one JSON line each")
    p.add_argument("inputs", nargs="*", metavar="INPUT")
    p.add_argument("--preview", metavar="DIR", help="write the OpenPose drawing (and the skeleton over photos) here")
    p.add_argument("--list-presets", action="store_true", help="print the preset names and exit")
    p.set_defaults(func=_pose_command)

    g = sub.add_parser("generate", help="draw a character in a pose; print one JSON line")
    g.add_argument("--pose", required=True, metavar="INPUT", help="photo, keypoint JSON or preset name")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    g.add_argument("--out", required=True, metavar="FILE.png", help="where to write the image (K>1: FILE_1.png ...)")
    g.add_argument("--steps", type=int, default=None, help="sampler steps (default: 8; 2 with --fast)")
    g.add_argument(
        "--fast", action="store_true",
        help="draw with the few-step student (weights/fast_unet: a quick preview in 1 to 4 steps)",
    )  # fmt: skip
    g.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's: 2 ours, 7.5 SD)")
    g.add_argument("--sampler", default="dpmpp_2m", help="ddim, dpmpp_2m or euler_a (default: %(default)s)")
    g.add_argument("--num-images", type=int, default=1, help="images to draw, 1 to 8 (default: %(default)s)")
    g.add_argument(
        "--edit",
        action="append",
        metavar="METHOD:INDEX=AMOUNT",
        help="move the style code along a direction by AMOUNT sigma (sefa or ganspace, index 0-9), e.g. "
        "sefa:0=2.0; repeatable",
    )
    g.add_argument(
        "--style-image", default=None, metavar="IMG",
        help="take the look of the character in this picture (a render, a generated PNG or any anime image)",
    )  # fmt: skip
    g.add_argument("--prompt", default=None, help="refine the character towards this text with CLIP ('a:1 | b:-0.5')")
    g.add_argument("--negative-prompt", default=None, help="text to move away from (with --prompt)")
    g.add_argument(
        "--refine-mode", default="latent", choices=("style", "latent", "both"),
        help="what CLIP refinement moves: the style code, the final latent, or both (default: %(default)s)",
    )  # fmt: skip
    g.add_argument("--refine-steps", type=int, default=None, help="refinement steps (default: the mode's)")
    g.add_argument("--clip", default=None, metavar="SPEC", help="CLIP folder or NAME:TAG (default: weights/clip)")
    g.add_argument(
        "--model", default=str(DEFAULT_MODEL), help="model folder, Hub id or keypoint-LDM .ckpt (default: %(default)s)"
    )
    g.add_argument("--controlnet", default=None, metavar="FOLDER_OR_ID", help=CONTROLNET_HELP)
    g.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    g.set_defaults(func=_generate_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run it."""
    args = build_parser().parse_args(argv)
    func = getattr(args, "func", _serve_command)
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
